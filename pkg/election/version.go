package election

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The lease argument (docs/fencing.md) needs "a lease cannot expire before
// ttl after its last renewal was sent", which etcd broke while issue 15247
// was open: a leader whose raft loop stalled (slow fsync, high CPU) could
// revoke every lease after the majority had moved on. The fix ("ignore old
// leader's leases revoking requests") shipped in 3.4.31 and 3.5.13; 3.6
// and later have it.
var minServer = map[int]int{4: 31, 5: 13} // minor -> first fixed patch (major 3)

// ServerVersionSafe reports whether etcd server version v (e.g. "3.5.12")
// has the lease fix, and why not.
func ServerVersionSafe(v string) (bool, string) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 3 {
		return false, fmt.Sprintf("etcd server version %q cannot be read", v)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	digits := parts[2]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i] // "13-rc.1" -> "13"
	}
	patch, err3 := strconv.Atoi(digits)
	if err1 != nil || err2 != nil || err3 != nil {
		return false, fmt.Sprintf("etcd server version %q cannot be read", v)
	}
	switch {
	case major > 3 || major == 3 && minor >= 6:
		return true, ""
	case major == 3:
		if first, ok := minServer[minor]; ok && patch >= first {
			return true, ""
		}
	}
	return false, fmt.Sprintf("etcd %s can revoke leases early when its leader stalls (etcd issue 15247; fixed in 3.4.31, 3.5.13 and 3.6): cifha's fencing argument needs a fixed server", v)
}

// ErrNoEndpoint: no etcd endpoint answered (Check says why).
var ErrNoEndpoint = errors.New("no etcd endpoint answered a version check")

// CheckServers asks every endpoint for its version and returns an error
// naming the first one without the lease fix. Endpoints that do not answer
// are skipped (the cluster may be partly down at start); at least one must
// answer. The endpoints are asked at the same time: asked one after
// another under ctx's one deadline, an endpoint that accepts connections
// and never answers (a black-holed host) used up the deadline, and an
// agent refused to start beside two healthy members.
func CheckServers(ctx context.Context, cli *clientv3.Client) error {
	eps := cli.Endpoints()
	versions := make([]string, len(eps))
	answered := make([]bool, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := cli.Status(ctx, ep); err == nil {
				versions[i], answered[i] = st.Version, true
			}
		}()
	}
	wg.Wait()
	n := 0
	for i, ep := range eps {
		if !answered[i] {
			continue
		}
		n++
		if ok, why := ServerVersionSafe(versions[i]); !ok {
			return fmt.Errorf("%s: %s", ep, why)
		}
	}
	if n == 0 {
		return ErrNoEndpoint
	}
	return nil
}
