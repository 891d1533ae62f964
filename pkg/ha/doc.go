// Package ha is cifha's decision core. It is pure: it imports no I/O (no
// net, no os/exec, no etcd client, no pgx) and reads no clock. It owns
//
//   - the Observation (what the agent saw this round, and what it remembers
//     between rounds) and the Plan (one action, its target and reason);
//   - Decide, which maps one to the other, deterministically;
//   - the one fence rule (FenceAt, MayBecomeWritable): every path that
//     makes postgres writable, and every check that a primary may keep
//     accepting writes, goes through it;
//   - the one timing rule (Timing.Validate): ttl, loop interval, fence
//     margin and etcd request timeouts, used by the file configuration, the
//     cluster-wide settings and the ttl read at start;
//   - the failover ranking, a sorted total order (Rank, Less);
//   - the switchover candidate check shared by the control API and Decide.
//
// pkg/agent observes, calls Decide and carries out the plan; nothing else
// decides.
package ha
