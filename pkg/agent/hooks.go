package agent

import (
	"context"
	"github.com/cifha/cifha/pkg/command"
	"github.com/cifha/cifha/pkg/ha"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Hooks are the operator's callbacks (like Patroni's): each is a command
// (argv) to which cifha appends the action, the role and the cluster name,
// e.g. `/usr/local/bin/cif-dns on_role_change primary cif`. They are the way
// to push a role change elsewhere: DNS, a load balancer, a remote ~/.cif
// over ssh.
type Hooks struct {
	OnStart, OnStop, OnRoleChange []string
	Timeout                       time.Duration
	Cluster                       string
}

type hookEvent struct {
	action, role string
	argv         []string
}

// hookRunner runs hooks one at a time, each bounded by its timeout, in its
// own goroutine: the HA loop only enqueues and never waits. If hooks pile
// up (a hook slower than the changes), the newest are dropped with a warning
// rather than block the loop.
type hookRunner struct {
	h   Hooks
	log hclog.Logger
	ch  chan hookEvent
}

func newHookRunner(h Hooks, log hclog.Logger) *hookRunner {
	return &hookRunner{h: h, log: log, ch: make(chan hookEvent, 16)}
}

func (r *hookRunner) fire(action, role string) {
	var argv []string
	switch action {
	case "on_start":
		argv = r.h.OnStart
	case "on_stop":
		argv = r.h.OnStop
	case "on_role_change":
		argv = r.h.OnRoleChange
	}
	if len(argv) == 0 {
		return
	}
	select {
	case r.ch <- hookEvent{action, role, argv}:
	default:
		r.log.Warn("hook queue full; dropping hook", "action", action, "role", role)
	}
}

// run runs queued hooks until ctx ends, then the ones still queued (each
// still bounded by the timeout), and returns.
func (r *hookRunner) run(ctx context.Context) {
	for {
		var ev hookEvent
		select {
		case ev = <-r.ch:
		case <-ctx.Done():
			select {
			case ev = <-r.ch:
			default:
				return
			}
		}
		out, err := command.Run(context.Background(), command.Spec{Argv: ev.argv, Args: []string{ev.action, ev.role, r.h.Cluster}, Timeout: r.h.Timeout})
		if err != nil {
			r.log.Error("hook failed", "action", ev.action, "role", ev.role, "error", err, "output", out)
		} else {
			r.log.Info("hook done", "action", ev.action, "role", ev.role, "output", out)
		}
	}
}

// hookState tracks what the hooks were last told.
type hookState struct {
	running bool
	role    string
}

// effectiveRole is "primary" for the leader's read-write postgres, "replica"
// for a standby, "" otherwise.
func effectiveRole(o ha.Observation) string {
	switch {
	case o.PG == nil:
		return ""
	case !o.PG.InRecovery && o.HoldsLeader:
		return "primary"
	case o.PG.InRecovery:
		return "replica"
	}
	return ""
}

// hooksAfter fires on_start, on_stop and on_role_change from two
// consecutive observations' facts.
func (a *Agent) hooksAfter(o ha.Observation) {
	if a.hooks == nil {
		return
	}
	role := effectiveRole(o)
	switch {
	case o.Running && !a.hookSt.running && role != "":
		a.hooks.fire("on_start", role)
		a.hookSt = hookState{running: true, role: role}
	case !o.Running && a.hookSt.running:
		a.hooks.fire("on_stop", a.hookSt.role)
		a.hookSt = hookState{}
	case o.Running && a.hookSt.running && role != "" && role != a.hookSt.role:
		a.hooks.fire("on_role_change", role)
		a.hookSt.role = role
	}
}
