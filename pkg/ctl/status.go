package ctl

import (
	"context"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberStatus is one row of `cifhactl status`.
type MemberStatus struct {
	Name     string `json:"name"`
	Host     string `json:"host"`
	Role     string `json:"role"` // "Leader", "Replica", "Primary" (without the key), "" when unknown
	State    string `json:"state"`
	Timeline int    `json:"timeline,omitempty"`
	// LagBytes is the leader's current WAL LSN minus this member's replay
	// LSN; nil when it cannot be known (shown as "unknown").
	LagBytes *int64 `json:"lag_bytes,omitempty"`
	// LagSeconds is the leader's view of how far this member's replay is
	// behind in time (the same number as /metrics'
	// cifha_replication_lag_seconds and /status); nil when unknown.
	LagSeconds   *float64 `json:"lag_seconds,omitempty"`
	ReplayPaused bool     `json:"replay_paused,omitempty"`
	// Synchronous: recorded by the leader as a synchronous standby (it has
	// every acknowledged commit; only such a member is promoted).
	Synchronous bool   `json:"synchronous,omitempty"`
	Reachable   bool   `json:"reachable"`
	APIURL      string `json:"api_url"`
	Reason      string `json:"reason,omitempty"`
	Error       string `json:"error,omitempty"`
	// PendingRestart lists parameters waiting for `cifhactl restart`.
	PendingRestart []string `json:"pending_restart,omitempty"`
	// TTL is the lease ttl the member's agent runs with; AgentRestartPending
	// is set when the cluster config asks for another one (it applies when
	// the agent next starts).
	TTL                 string `json:"ttl,omitempty"`
	AgentRestartPending bool   `json:"agent_restart_pending,omitempty"`
}

// ClusterStatus is the whole answer of `cifhactl status`.
type ClusterStatus struct {
	Cluster string         `json:"cluster"`
	Leader  string         `json:"leader"`
	Members []MemberStatus `json:"members"`
	// Healthy: a leader whose postgres runs, every other member streaming
	// from it, every member's agent answering, no slot kept for a member
	// that is gone. Problems say why not; they make the exit status 1.
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems,omitempty"`
	// Invalid are keys in etcd that hold garbage.
	Invalid map[string]string `json:"invalid_keys,omitempty"`
	// Ignored are keys that cannot belong to a live member (no lease, or a
	// name no member can have).
	Ignored map[string]string `json:"ignored_keys,omitempty"`
	// Paused is maintenance mode: no automatic action.
	Paused bool `json:"paused"`
	// Switchover describes a pending (scheduled) switchover, if any.
	Switchover string `json:"switchover,omitempty"`
	// Sync is the leader's synchronous-replication record (nil:
	// asynchronous replication).
	Sync *state.SyncState `json:"sync,omitempty"`
	// Failsafe is the failsafe member list (nil: failsafe mode off).
	Failsafe *state.FailsafeState `json:"failsafe,omitempty"`
}

// IsHealthy reports whether no problem was found.
func (s ClusterStatus) IsHealthy() bool { return len(s.Problems) == 0 }

// Status reads the cluster from etcd, then asks every member's API for its
// current state (concurrently, each bounded by apiTimeout).
func Status(ctx context.Context, cli *clientv3.Client, cluster string, hc *http.Client, apiTimeout time.Duration) (ClusterStatus, error) {
	keys := election.KeysFor(cluster)
	// WithRequireLeader: an etcd member cut off from its peers answers
	// "no leader" at once, and the client asks another endpoint, instead
	// of holding a linearizable read until the timeout (the lab's
	// cif-etcd-cut: a switchover from a host that reaches every member
	// timed out on the one in the minority).
	resp, err := cli.Get(clientv3.WithRequireLeader(ctx), keys.Prefix, clientv3.WithPrefix())
	if err != nil {
		return ClusterStatus{}, fmt.Errorf("read cluster %q from etcd: %w", cluster, err)
	}
	c := election.ParseCluster(keys, resp.Header.Revision, resp.Kvs)
	out := ClusterStatus{Cluster: cluster, Invalid: c.Invalid, Ignored: c.Ignored, Paused: c.Paused, Sync: c.Sync, Failsafe: c.Failsafe}
	if sw := c.Switchover; sw != nil {
		out.Switchover = fmt.Sprintf("from %s to %s", sw.From, sw.To)
		if !sw.At.IsZero() {
			out.Switchover += " at " + sw.At.UTC().Format(time.RFC3339)
		}
	}
	if l := c.Leader; l != nil && l.Valid {
		out.Leader = l.Name
	}
	names := make([]string, 0, len(c.Members))
	for n := range c.Members {
		names = append(names, n)
	}
	sort.Strings(names)
	fresh := make([]*election.Member, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func(i int, m election.Member) {
			defer wg.Done()
			fresh[i], errs[i] = fetch(ctx, hc, m.APIURL, apiTimeout)
		}(i, c.Members[n])
	}
	wg.Wait()
	members := map[string]election.Member{}
	for i, n := range names {
		m := c.Members[n]
		if fresh[i] != nil && fresh[i].Name == n {
			m = *fresh[i]
		}
		members[n] = m
	}
	leader, hasLeader := members[out.Leader]
	for i, n := range names {
		m := members[n]
		row := MemberStatus{Name: n, Host: m.ConnAddress, State: m.State, Timeline: m.Timeline,
			ReplayPaused: m.ReplayPaused, Reachable: errs[i] == nil, APIURL: m.APIURL, Reason: m.Reason, PendingRestart: m.PendingRestart, TTL: m.TTL}
		if want, err := time.ParseDuration(c.Config.TTL); err == nil && m.TTL != "" {
			if have, err := time.ParseDuration(m.TTL); err == nil && have != want {
				row.AgentRestartPending = true
			}
		}
		switch {
		case n == out.Leader:
			row.Role = "Leader"
		case c.Sync != nil && c.LastLeader != nil && c.LastLeader.Name == out.Leader && c.Sync.Of(out.Leader, c.LastLeader.Term) && c.Sync.Has(n):
			row.Role, row.Synchronous = "Sync Standby", true
		case m.Role == "replica":
			row.Role = "Replica"
		case m.Role == "primary":
			row.Role = "Primary"
		}
		if errs[i] != nil {
			row.Error = errs[i].Error()
			out.Problems = append(out.Problems, fmt.Sprintf("member %s unreachable: %v", n, errs[i]))
		}
		if n != out.Leader && hasLeader {
			row.LagBytes, row.LagSeconds = leader.LagOf(m)
		}
		out.Members = append(out.Members, row)
	}
	if out.Leader == "" {
		// Say why nobody took over: each member publishes the reason of its
		// current plan (lag gate, nofailover, incomplete data, ...).
		why := []string{}
		for _, n := range names {
			if r := members[n].Reason; r != "" {
				why = append(why, n+": "+r)
			}
		}
		msg := "no leader"
		if len(why) > 0 {
			msg += " (" + strings.Join(why, "; ") + ")"
		}
		out.Problems = append(out.Problems, msg)
	} else if !hasLeader {
		out.Problems = append(out.Problems, fmt.Sprintf("leader %s has not published its state", out.Leader))
	}
	out.Problems = append(out.Problems, replicationProblems(out.Leader, hasLeader, leader, names, members)...)
	out.Healthy = len(out.Problems) == 0
	return out, nil
}

// replicationProblems: the leader's postgres not running, a member not
// streaming, a slot on the leader for a member that is not registered.
func replicationProblems(leaderName string, hasLeader bool, leader election.Member, names []string, members map[string]election.Member) []string {
	var out []string
	slotOwner := map[string]string{}
	for _, n := range names {
		m := members[n]
		slotOwner[state.SlotName(n)] = n
		switch {
		case n == leaderName && hasLeader && m.State != "running":
			out = append(out, fmt.Sprintf("leader %s: postgres is %s, not running", n, orUnknown(m.State)))
		case n != leaderName && m.State != "streaming":
			out = append(out, fmt.Sprintf("member %s: not streaming (%s)", n, orUnknown(m.State)))
		}
	}
	if hasLeader {
		for _, sl := range leader.Slots {
			if _, ok := slotOwner[sl]; !ok {
				out = append(out, fmt.Sprintf("leader %s keeps replication slot %s for a member that is not registered (its agent is down?): WAL is held for it up to max_slot_wal_keep_size; `cifhactl remove` drops it if the member is gone for good", leaderName, sl))
			}
		}
	}
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// lag is m's replay lag in bytes as the leader shows it (state.Member.LagOf).
func lag(leader, m election.Member) *int64 {
	b, _ := leader.LagOf(m)
	return b
}

func fetch(ctx context.Context, hc *http.Client, base string, timeout time.Duration) (*election.Member, error) {
	if base == "" {
		return nil, fmt.Errorf("no API URL published")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var s api.StatusResponse
	code, err := api.Get(ctx, hc, base, "/status", &s)
	switch {
	case code == http.StatusUnauthorized:
		return nil, api.ErrUnauthorized
	case err != nil:
		return nil, err
	case s.Self.Name == "":
		return nil, fmt.Errorf("GET %s/status: %d without a member state", base, code)
	}
	return &s.Self, nil
}

// RenderTable writes the status as a table in the style of `patronictl list`.
func RenderTable(w io.Writer, s ClusterStatus) {
	header := []string{"Member", "Host", "Role", "State", "TL", "Lag (bytes)", "Lag (MB)", "Lag (s)"}
	rows := [][]string{}
	for _, m := range s.Members {
		name := m.Name
		if m.Name == s.Leader {
			name += " *"
		}
		state := m.State
		if len(m.PendingRestart) > 0 {
			state += " (restart pending)"
		}
		if m.AgentRestartPending {
			state += " (agent restart pending: ttl)"
		}
		if !m.Reachable {
			state += " (unreachable)"
		}
		if m.ReplayPaused {
			state += " (replay paused)"
		}
		tl := ""
		if m.Timeline > 0 {
			tl = fmt.Sprint(m.Timeline)
		}
		lb, lm, ls := "", "", ""
		if m.Name != s.Leader {
			lb, lm, ls = "unknown", "unknown", "unknown"
			if m.LagBytes != nil {
				lb = fmt.Sprint(*m.LagBytes)
				lm = fmt.Sprintf("%.1f", float64(*m.LagBytes)/(1<<20))
			}
			if m.LagSeconds != nil {
				ls = fmt.Sprintf("%.1f", *m.LagSeconds)
			}
		}
		rows = append(rows, []string{name, m.Host, m.Role, state, tl, lb, lm, ls})
	}
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if len(c) > widths[i] {
				widths[i] = len(c)
			}
		}
	}
	sep := "+"
	for _, wd := range widths {
		sep += strings.Repeat("-", wd+2) + "+"
	}
	title := fmt.Sprintf("+ Cluster: %s ", s.Cluster)
	if s.Paused {
		title = fmt.Sprintf("+ Cluster: %s (PAUSED: maintenance mode, no automatic failover or restart) ", s.Cluster)
	}
	if len(title) < len(sep) {
		title += sep[len(title):]
	}
	line := func(cells []string) {
		fmt.Fprint(w, "|")
		for i, c := range cells {
			if i >= 4 { // numbers right-aligned
				fmt.Fprintf(w, " %*s |", widths[i], c)
			} else {
				fmt.Fprintf(w, " %-*s |", widths[i], c)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, title)
	line(header)
	fmt.Fprintln(w, sep)
	for _, r := range rows {
		line(r)
	}
	fmt.Fprintln(w, sep)
	if s.Leader != "" {
		fmt.Fprintf(w, "* leader: %s\n", s.Leader)
	}
	if s.Switchover != "" {
		fmt.Fprintf(w, "switchover pending: %s\n", s.Switchover)
	}
	if f := s.Failsafe; f != nil {
		fmt.Fprintf(w, "failsafe mode: on (members %s, written by %s)\n", strings.Join(slices.Sorted(maps.Keys(f.Members)), ", "), f.Leader)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Invalid)) {
		fmt.Fprintf(w, "ignored key %s: %s\n", k, s.Invalid[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.Ignored)) {
		fmt.Fprintf(w, "ignored key %s: %s (cifhactl remove deletes it)\n", k, s.Ignored[k])
	}
}

// RenderHistory prints leader changes as a table.
func RenderHistory(w io.Writer, recs []election.HistoryRecord) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no leader changes recorded")
		return
	}
	fmt.Fprintf(w, "%-20s  %-10s  %-10s  %3s  %-12s  %s\n", "TIME", "OLD", "NEW", "TL", "LSN", "REASON")
	for _, r := range recs {
		old := r.OldLeader
		if old == "" {
			old = "-"
		}
		fmt.Fprintf(w, "%-20s  %-10s  %-10s  %3d  %-12s  %s\n", r.At.UTC().Format("2006-01-02 15:04:05"), old, r.NewLeader, r.Timeline, r.LSN, r.Reason)
	}
}
