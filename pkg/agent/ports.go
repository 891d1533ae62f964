package agent

import (
	"github.com/cifha/cifha/pkg/agent/port"
	"github.com/cifha/cifha/pkg/election"
)

// The agent's boundaries are defined in pkg/agent/port (fakes in
// pkg/agent/agenttest); these aliases keep the agent's code short.
type (
	Postgres = port.Postgres
	DCS      = port.DCS
	Peers    = port.Peers
	Control  = port.Control
	Watchdog = port.Watchdog
)

// The real types satisfy the boundaries.
var (
	_ port.DCS      = (*election.Store)(nil)
	_ port.Control  = (*election.Store)(nil)
	_ port.Postgres = (*PG)(nil)
	_ port.Peers    = HTTPPeers{}
	_ port.Watchdog = (*ProcessWatchdog)(nil)
)
