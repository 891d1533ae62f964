package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/cifha/cifha/pkg/state"
)

// promisers answers every failsafe request with d, or fails for the
// members in down.
type promisers struct {
	d     time.Duration
	down  map[string]bool
	mu    sync.Mutex
	asked []string
}

func (p *promisers) Candidate(context.Context, string) (ha.Candidate, error) {
	return ha.Candidate{}, errors.New("no candidates in this test")
}

func (p *promisers) Failsafe(_ context.Context, url, _, _, _ string) (time.Duration, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, url)
	for name := range p.down {
		if strings.Contains(url, name) {
			return 0, errors.New("connection refused")
		}
	}
	return p.d, nil
}

// failsafeLeader is a running leader db1 in failsafe mode with standbys
// db2 and db3; its list is written and confirmed.
func failsafeLeader(t *testing.T, peers *promisers) (*Agent, *agenttest.DCS, *agenttest.Clock) {
	t.Helper()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)})
	a := New(Options{Name: "db1", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, TTL: 3 * time.Second, Failsafe: true, APIURL: "http://db1:8008", Peers: peers})
	ctx := context.Background()
	if err := a.Iterate(ctx); err != nil { // acquire and start
		t.Fatal(err)
	}
	for _, n := range []string{"db2", "db3"} {
		dcs.Cluster.Members[n] = election.Member{Name: n, Role: "replica", State: "streaming", APIURL: "http://" + n + ":8008"}
	}
	rounds(a, 2) // writes the list, then sees it
	if f := dcs.Cluster.Failsafe; f == nil || len(f.Members) != 3 || f.Leader != "db1" {
		t.Fatalf("failsafe list %+v", f)
	}
	if !a.fs.ready {
		t.Fatal("the list is in etcd, yet the asker is not ready")
	}
	return a, dcs, clk
}

// TestFailsafeLeaderStaysWritableOnPromises: etcd unreachable, lease
// renewals stopped. With every member's promise the leader stays writable
// past its lease deadline; without one, it fences at the deadline.
func TestFailsafeLeaderStaysWritableOnPromises(t *testing.T) {
	ctx := context.Background()
	peers := &promisers{d: 3 * time.Second}
	a, dcs, clk := failsafeLeader(t, peers)
	dcs.Err = errors.New("etcd unreachable")
	tm := ha.Timing{TTL: 3 * time.Second}
	clk.Advance(1500 * time.Millisecond) // renewals overdue; 1.5 s of lease left
	if !a.fs.round(ctx, tm, 7, a.fs.list) {
		t.Fatalf("round failed; asked %v", peers.asked)
	}
	if len(peers.asked) != 2 {
		t.Fatalf("asked %v, want db2 and db3", peers.asked)
	}
	clk.Advance(1700 * time.Millisecond) // lease over 0.2 s ago; cover until t0+4.5 s, fence at t0+3.5 s
	a.Iterate(ctx)
	if p := a.lastPlan; p.Action != ha.Wait || !strings.Contains(p.Reason, "etcd unreachable") {
		t.Fatalf("plan %v: the cover should keep it writable", p)
	}
	if s := a.Snapshot(); !ha.MayStayWritable(clk.Now(), s.Lease, time.Second) {
		t.Fatalf("snapshot lease %+v: /primary would answer 503 under the cover", s.Lease)
	}
	// db3 stops answering: no new cover; the fence comes when the current
	// one ends (minus the margin).
	peers.down = map[string]bool{"db3": true}
	if a.fs.round(ctx, tm, 7, a.fs.list) {
		t.Fatal("a round with db3 down counted")
	}
	clk.Advance(300 * time.Millisecond)
	a.Iterate(ctx)
	if p := a.lastPlan; p.Action != ha.Fence || !strings.Contains(p.Reason, "failsafe promises end") {
		t.Fatalf("plan %v, want fence when the cover ends", p)
	}
}

// TestFailsafeOffNoCover: without failsafe mode nothing is asked and the
// list is removed.
func TestFailsafeOffNoCover(t *testing.T) {
	peers := &promisers{d: 3 * time.Second}
	a, dcs, _ := failsafeLeader(t, peers)
	off := false
	dcs.Cluster.Config.FailsafeMode = &off
	dcs.Cluster.ConfigRev = 99
	rounds(a, 2)
	if dcs.Cluster.Failsafe != nil || a.fs.on || a.fs.ready {
		t.Fatalf("failsafe off: list %+v, on %v, ready %v", dcs.Cluster.Failsafe, a.fs.on, a.fs.ready)
	}
}

// TestFailsafePromiseHoldsBackFailover: a standby that promised leader
// db1 does not take the key while the promise runs, even with the key
// gone; it refuses other leaders' requests and any request while it is
// taking the key; the promise is kept by the HTTP endpoint's rules.
func TestFailsafePromiseHoldsBackFailover(t *testing.T) {
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid, Standby: pgctl.StandbyState{Standby: true, Target: "db1 10.0.1.1:5432"}, Recv: 0x5000}
	pg.Start(ctx, 0)
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 8, ValidUntil: t0.Add(time.Hour)})
	dcs.Cluster.Leader = &election.Leader{Name: "db1", Valid: true, CreateRev: 3, ModRev: 3, Lease: 5}
	dcs.Cluster.Members["db1"] = election.Member{Name: "db1", Role: "primary", State: "running", ConnAddress: "10.0.1.1:5432", APIURL: "http://10.0.1.1:8008"}
	dcs.Cluster.LastLeader = &election.LastLeader{Name: "db1", Timeline: 1, LSN: "0/5000"}
	dcs.Cluster.Failsafe = &state.FailsafeState{Leader: "db1", Members: map[string]string{"db1": "http://10.0.1.1:8008", "db2": "http://10.0.1.2:8008"}}
	dcs.Cluster.FailsafeRev, dcs.Rev = 4, 4
	a := New(Options{Name: "db2", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, MaxLag: 1 << 20, RecentWindow: 6 * time.Second, Peers: noPeers{}, TTL: 3 * time.Second, Token: "tok"})
	clk.Advance(4 * time.Second) // past the after-start hold
	a.Iterate(ctx)
	h := Handler(a)
	ask := func(body, token string) (int, string) {
		r := httptest.NewRequest(http.MethodPost, "/failsafe", strings.NewReader(body))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	for _, c := range []struct {
		body, token string
		code        int
	}{
		{`{"leader":"db1","member":"db2"}`, "", http.StatusUnauthorized},
		{`{"leader":"db1","member":"db2"}`, "wrong", http.StatusUnauthorized},
		{`{"leader":"db1","member":"db2",`, "tok", http.StatusBadRequest},
		{`{"leader":"db1","member":"db2","extra":1}`, "tok", http.StatusBadRequest},
		{`{"leader":"../etc","member":"db2"}`, "tok", http.StatusBadRequest},
		{`{"leader":"db2","member":"db2"}`, "tok", http.StatusConflict}, // itself
		{`{"leader":"db3","member":"db2"}`, "tok", http.StatusConflict}, // not the one it follows
		{`{"leader":"db1","member":"db2"}`, "tok", http.StatusOK},       // promised
		{`{"leader":"db1","member":"db2"}`, "tok", http.StatusOK},       // again: extended
	} {
		if code, body := ask(c.body, c.token); code != c.code {
			t.Fatalf("%s with token %q: %d %s, want %d", c.body, c.token, code, body, c.code)
		}
	}
	// db1's key expires (it is cut off from etcd); db2 is the only and
	// best candidate, but it promised.
	dcs.Cluster.Leader = nil
	dcs.Cluster.Members["db1"] = election.Member{}
	delete(dcs.Cluster.Members, "db1")
	clk.Advance(time.Second)
	a.Iterate(ctx)
	if p := a.lastPlan; p.Action != ha.Wait || !strings.Contains(p.Reason, "promised leader db1") || has(pg.Calls, "promote") {
		t.Fatalf("plan %v, calls %v: a promised standby must not take over", p, pg.Calls)
	}
	// The agent-level guard holds even if a plan slipped through.
	if err := a.fs.beginTake(clk.Now(), true); err == nil {
		t.Fatal("beginTake succeeded under a promise")
	}
	clk.Advance(3 * time.Second) // the promise is over
	a.Iterate(ctx)
	if p := a.lastPlan; p.Action != ha.TakeOver || !has(pg.Calls, "promote") {
		t.Fatalf("plan %v, calls %v: the promise is over, it should take over", p, pg.Calls)
	}
	// Now it leads: it promises nothing.
	if code, body := ask(`{"leader":"db1","member":"db2"}`, "tok"); code != http.StatusConflict {
		t.Fatalf("a leader promised: %d %s", code, body)
	}
}

// TestFailsafeGiveAndTakeExclude: a promise and taking the key exclude
// each other whichever comes first; a restarted agent holds for a ttl
// while a list exists.
func TestFailsafeGiveAndTakeExclude(t *testing.T) {
	clk := agenttest.NewClock(t0)
	a := New(Options{Name: "db2", PG: &agenttest.Postgres{}, DCS: agenttest.NewDCS("db2", election.LeaseState{}), Now: clk.Now, TTL: 3 * time.Second, FenceMargin: time.Second})
	if err := a.fs.beginTake(clk.Now(), true); err == nil || !strings.Contains(err.Error(), "*") {
		t.Fatalf("after start with a list: %v, want the restart hold", err)
	}
	if err := a.fs.beginTake(clk.Now(), false); err != nil {
		t.Fatalf("after start without a list: %v", err)
	}
	if err := a.fs.give("db1", clk.Now(), 3*time.Second, 0); err == nil {
		t.Fatal("promised while taking the key")
	}
	// The next observation shows no key (a view that lags the attempt):
	// still no promise for a ttl after the attempt.
	a.fs.setRole(false, false, 0)
	if err := a.fs.give("db1", clk.Now(), 3*time.Second, 0); err == nil {
		t.Fatal("promised right after an attempt to take the key")
	}
	clk.Advance(3 * time.Second)
	if err := a.fs.give("db1", clk.Now(), 3*time.Second, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.fs.give("db3", clk.Now(), 3*time.Second, 0); err == nil {
		t.Fatal("promised a second leader while the first promise runs")
	}
	clk.Advance(2 * time.Second)
	if err := a.fs.beginTake(clk.Now(), false); err == nil {
		t.Fatal("took the key under a promise")
	}
	clk.Advance(1500 * time.Millisecond)
	if err := a.fs.beginTake(clk.Now(), true); err != nil {
		t.Fatalf("promise over: %v", err)
	}
}

// TestFailsafeNewTermAsksOnlyItsOwnList: a new term (another lease made
// writable) forgets the previous term's list and readiness until its own
// step confirms a list.
func TestFailsafeNewTermAsksOnlyItsOwnList(t *testing.T) {
	peers := &promisers{d: 3 * time.Second}
	a, _, _ := failsafeLeader(t, peers)
	if !a.fs.ready || len(a.fs.list) != 3 {
		t.Fatalf("ready %v list %v", a.fs.ready, a.fs.list)
	}
	a.fs.setRole(true, false, 99)
	if a.fs.ready || a.fs.list != nil {
		t.Fatalf("new term kept ready %v list %v", a.fs.ready, a.fs.list)
	}
}

// startingPG reports postgres down until up is set, counting the calls.
type startingPG struct {
	*agenttest.Postgres
	up    atomic.Bool
	calls atomic.Int32
}

func (p *startingPG) Running() bool { p.calls.Add(1); return p.up.Load() }

// TestFailsafeAskerWakesWhenPostgresComesUp: the term is armed while
// postgres is still starting (start-primary arms it first). The asker must
// look again when postgres is up, not sleep through its idle check: a
// checker round saw it asleep for 30 s through an etcd outage that began
// seconds after a crashed primary was restarted, and the leader fenced.
func TestFailsafeAskerWakesWhenPostgresComesUp(t *testing.T) {
	peers := &promisers{d: 3 * time.Second}
	a, _, clk := failsafeLeader(t, peers)
	pg := &startingPG{Postgres: a.opt.PG.(*agenttest.Postgres)}
	a.opt.PG = pg
	clk.Advance(1500 * time.Millisecond) // renewals overdue: time to ask
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.fs.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	a.fs.poke()
	deadline := time.Now().Add(5 * time.Second)
	for pg.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the asker never looked at postgres")
		}
		time.Sleep(5 * time.Millisecond)
	}
	pg.up.Store(true)
	for {
		peers.mu.Lock()
		n := len(peers.asked)
		peers.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("postgres is up and renewals are overdue, yet the asker asked nobody within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
