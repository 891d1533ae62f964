// Package election owns cifha's state in etcd: the agent's lease and its
// renewal deadline, the leader key (acquired by a create-if-absent
// transaction, leader-only writes guarded by its create revision), the
// initialize key that picks the one node running initdb, member keys with
// each member's published state, and a watch that wakes the agent on change.
//
// Layout under /cifha/<cluster>/:
//
//	leader        member name; bound to the leader's lease
//	initialize    member name that ran (or runs) initdb; permanent
//	last-leader   JSON {name, timeline, lsn, at}; written with the leader key
//	members/<n>   JSON Member; bound to member n's lease
package election
