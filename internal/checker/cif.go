package checker

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/pkg/cifsync"
)

// The lab's CIF node, checked as CIF sees the cluster: `cifha cif-sync`
// keeps a real ~/.cif, and a client that connects the way CIF v1 does
// (cifclient.pl: Perl DBI/DBD::Pg, the [db] block read by Config::Simple,
// no port, no timeout) commits through it. After every round:
//
//   - ~/.cif names the final primary within the bound;
//   - every value written named a member that was accepting writes then
//     (its pinned writer acknowledged a write within a second of the
//     change), or the final primary: never a wrong host;
//   - after every change the client committed on the new host within
//     CIFCommitBound, even when the old primary is black-holed;
//   - in synchronous mode every row the client had acknowledged is on
//     the final primary.

// CIFCommitBound is how soon after [db] host is rewritten the CIF client
// must commit on the new host; CIFLagBound how soon after a new primary's
// first acknowledged write ~/.cif must name it (unless the CIF node was
// cut from etcd).
const (
	CIFCommitBound = time.Second
	CIFLagBound    = 5 * time.Second
)

//go:embed cifclient.pl
var cifClientScript []byte

// CIFClientScript is the CIF-like Perl client (for docs and tests).
func CIFClientScript() []byte { return cifClientScript }

// CIFNodeOptions describes the CIF node's processes.
type CIFNodeOptions struct {
	// Dir holds the client script and the processes' logs.
	Dir string
	// File is the ~/.cif that cif-sync keeps (it exists, naming the
	// primary at start).
	File string
	// Command runs a program on the CIF node.
	Command func(path string, args ...string) *exec.Cmd
	// CIFSync is cif-sync's argv (cifha cif-sync --config ...).
	CIFSync []string
	// Members maps what ~/.cif's host may say to member names.
	Members map[string]string
}

// CIFNode is the running CIF node.
type CIFNode struct {
	o    CIFNodeOptions
	mu   sync.Mutex
	host string // the file's [db] host now
	// changes are the file's changes not yet checked; commits the client's
	// commits not yet checked (the last one is kept across rounds).
	changes []fileChange
	commits []cifCommit
	// cut is when the CIF node was cut from etcd this round (zero: not).
	cut   [2]time.Time
	procs []*exec.Cmd
	stop  chan struct{}
	wg    sync.WaitGroup
}

type fileChange struct {
	at   time.Time
	host string
}

type cifCommit struct {
	seq  int64
	host string
	at   time.Time
}

// StartCIFNode starts cif-sync and the CIF client, and watches the file.
func StartCIFNode(o CIFNodeOptions) (*CIFNode, error) {
	n := &CIFNode{o: o, stop: make(chan struct{})}
	b, err := os.ReadFile(o.File)
	if err != nil {
		return nil, err
	}
	n.host = cifsync.DBValues(b)["host"]
	script := filepath.Join(o.Dir, "cifclient.pl")
	if err := os.WriteFile(script, cifClientScript, 0o755); err != nil {
		return nil, err
	}
	start := func(name string, argv []string, stdout io.Writer) error {
		logf, err := os.Create(filepath.Join(o.Dir, name+".log"))
		if err != nil {
			return err
		}
		cmd := o.Command(argv[0], argv[1:]...)
		cmd.Stderr = logf
		cmd.Stdout = logf
		if stdout != nil {
			cmd.Stdout = stdout
		}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start %s: %w", name, err)
		}
		n.procs = append(n.procs, cmd)
		n.wg.Add(1)
		go func() { defer n.wg.Done(); _ = cmd.Wait(); logf.Close() }()
		return nil
	}
	if err := start("cif-sync", o.CIFSync, nil); err != nil {
		n.Close()
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		n.Close()
		return nil, err
	}
	err = start("cif-client", []string{"perl", script, o.File}, pw)
	pw.Close()
	if err != nil {
		pr.Close()
		n.Close()
		return nil, err
	}
	n.wg.Add(2)
	go func() { defer n.wg.Done(); defer pr.Close(); n.readCommits(pr) }()
	go func() { defer n.wg.Done(); n.watch() }()
	// cif-sync's first reconcile names the primary (the file may start
	// with CIF's default, 127.0.0.1); the rounds check what follows.
	if err := waitFor(context.Background(), time.Minute, func() bool { _, ok := o.Members[n.Host()]; return ok }); err != nil {
		n.Close()
		return nil, fmt.Errorf("cif-sync did not make %s name a member within a minute (see %s)", o.File, filepath.Join(o.Dir, "cif-sync.log"))
	}
	n.mu.Lock()
	n.changes, n.commits = nil, nil
	n.mu.Unlock()
	return n, nil
}

// readCommits parses the client's "ok <seq> <host> <unix time>" lines.
func (n *CIFNode) readCommits(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ok" {
			continue
		}
		seq, err1 := strconv.ParseInt(f[1], 10, 64)
		secs, err2 := strconv.ParseFloat(f[3], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		at := time.Unix(0, int64(secs*1e9))
		n.mu.Lock()
		n.commits = append(n.commits, cifCommit{seq, f[2], at})
		n.mu.Unlock()
	}
}

// watch reads the file every 10 ms and records each change of [db] host.
// (The namespaces share the host's clock, so these times and the
// client's are on one clock.)
func (n *CIFNode) watch() {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		b, err := os.ReadFile(n.o.File)
		if err != nil {
			continue // mid-rename is atomic; a read error is retried
		}
		h := cifsync.DBValues(b)["host"]
		n.mu.Lock()
		if h != n.host {
			n.host = h
			n.changes = append(n.changes, fileChange{time.Now(), h})
		}
		n.mu.Unlock()
	}
}

// cutFromEtcd records the start (end: false) or the end of a cut of the
// CIF node from etcd: the file must not change in between.
func (n *CIFNode) cutFromEtcd(start bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if start {
		n.cut = [2]time.Time{time.Now()}
	} else {
		n.cut[1] = time.Now()
	}
}

// Host is the file's [db] host now.
func (n *CIFNode) Host() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.host
}

// cifRound is what one round's check found.
type cifRound struct {
	// lag: the longest time from a member's first acknowledged write to
	// the file naming it; commit: from a change to the client's first
	// commit on the new host.
	lag, commit time.Duration
	acked       int
	seqs        []int64 // acknowledged this round
}

// check runs the round's CIF checks (see the top of this file) against
// the final primary p and the round's pinned-writer history.
func (n *CIFNode) check(ctx context.Context, p *cluster.Node, spans map[string][]span, bound time.Duration) (cifRound, error) {
	var r cifRound
	if err := waitFor(ctx, bound, func() bool { return n.Host() == p.Addr }); err != nil {
		return r, fmt.Errorf("~/.cif names %q, not the primary %s (%s), %s after the round", n.Host(), p.Name, p.Addr, bound)
	}
	// The client's first commit after the last change may come up to the
	// bound later.
	n.mu.Lock()
	var last time.Time
	if len(n.changes) > 0 {
		last = n.changes[len(n.changes)-1].at
	}
	n.mu.Unlock()
	if !last.IsZero() {
		_ = waitFor(ctx, CIFCommitBound+time.Second, func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			k := len(n.commits)
			return k > 0 && n.commits[k-1].at.After(last.Add(CIFCommitBound))
		})
	}
	n.mu.Lock()
	changes, commits := n.changes, n.commits
	n.changes = nil
	n.commits = nil
	cut := n.cut
	n.cut = [2]time.Time{}
	n.mu.Unlock()
	for _, c := range commits {
		r.seqs = append(r.seqs, c.seq)
	}
	r.acked = len(r.seqs)
	var errs []error
	if !cut[0].IsZero() {
		for _, c := range changes {
			if !c.at.Before(cut[0]) && (cut[1].IsZero() || !c.at.After(cut[1])) {
				errs = append(errs, fmt.Errorf("~/.cif was rewritten to %q at %s while the CIF node was cut from etcd (it must keep the last good host)", c.host, c.at.Format("15:04:05.000")))
			}
		}
	}
	for i, c := range changes {
		name := n.o.Members[c.host]
		// Never a wrong host: the member named was accepting writes
		// around the change (or is the final primary).
		final := i == len(changes)-1 && c.host == p.Addr
		if !final && !ackedNear(spans[name], c.at, time.Second) {
			errs = append(errs, fmt.Errorf("~/.cif named %q (member %q) at %s, which acknowledged no write within 1s of it", c.host, name, c.at.Format("15:04:05.000")))
		}
		if first := becameWritable(spans, name, c.at); !first.IsZero() && c.at.After(first) {
			lag := c.at.Sub(first)
			r.lag = max(r.lag, lag)
			if lag > CIFLagBound && cut[0].IsZero() {
				errs = append(errs, fmt.Errorf("~/.cif named %s %s after it first accepted a write (bound %s)", name, lag.Round(time.Millisecond), CIFLagBound))
			}
		}
		// The client's first commit on the new host, unless the file
		// changed again before the bound.
		until := c.at.Add(CIFCommitBound)
		if i+1 < len(changes) && changes[i+1].at.Before(until) {
			continue
		}
		var got time.Time
		for _, m := range commits {
			// The watcher sees a change up to 10 ms late: a commit on
			// the new host may precede the recorded time a little.
			if m.host == c.host && m.at.After(c.at.Add(-50*time.Millisecond)) {
				got = m.at
				break
			}
		}
		switch {
		case got.IsZero():
			errs = append(errs, fmt.Errorf("the CIF client did not commit on %s after ~/.cif named it at %s (see cif-client.log)", c.host, c.at.Format("15:04:05.000")))
		default:
			d := max(got.Sub(c.at), 0)
			r.commit = max(r.commit, d)
			if d > CIFCommitBound {
				errs = append(errs, fmt.Errorf("the CIF client first committed on %s %s after ~/.cif named it (bound %s)", c.host, d.Round(time.Millisecond), CIFCommitBound))
			}
		}
	}
	return r, errors.Join(errs...)
}

// missing counts the client's acknowledged rows (seqs) absent on p.
func (n *CIFNode) missing(ctx context.Context, p *cluster.Node, seqs []int64) (int, error) {
	if len(seqs) == 0 {
		return 0, nil
	}
	conn, err := p.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var k int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM unnest($1::bigint[]) s WHERE NOT EXISTS (SELECT 1 FROM cif_client c WHERE c.seq = s)", seqs).Scan(&k)
	return k, err
}

func ackedNear(ss []span, t time.Time, d time.Duration) bool {
	for _, s := range ss {
		if s.end.After(t.Add(-d)) && s.end.Before(t.Add(d)) {
			return true
		}
	}
	return false
}

// becameWritable is when member name started its latest run of writes
// before t: its first acknowledged write after the last write another
// member acknowledged before t (zero: none).
func becameWritable(spans map[string][]span, name string, t time.Time) time.Time {
	var others time.Time
	for m, ss := range spans {
		for _, x := range ss {
			if m != name && x.end.Before(t) && x.end.After(others) {
				others = x.end
			}
		}
	}
	for _, x := range spans[name] {
		if x.end.After(others) {
			return x.end
		}
	}
	return time.Time{}
}

// Close stops the CIF node's processes (by their PIDs) and its watcher.
func (n *CIFNode) Close() {
	select {
	case <-n.stop:
		return
	default:
	}
	close(n.stop)
	for _, p := range n.procs {
		if p.Process != nil {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
	}
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		for _, p := range n.procs {
			_ = p.Process.Kill()
		}
		<-done
	}
}
