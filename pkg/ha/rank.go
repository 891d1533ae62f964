package ha

import (
	"slices"

	"github.com/cifha/cifha/pkg/state"
)

// Rank is one failover candidate's position.
type Rank struct {
	Name     string
	Timeline int
	// Received is the furthest WAL it has: received or replayed.
	Received state.LSN
	Replayed state.LSN
	Priority int
}

// Less is the one failover order, a strict total order (names are unique):
// a ranks before b when it is on a newer timeline, then has received more
// WAL, then replayed more, then has a higher failover_priority, then by
// name. The timeline comes first: a standby still on an older timeline may
// hold WAL past the fork point of the newer one (a dead branch) and must
// not win by LSN.
func Less(a, b Rank) bool {
	switch {
	case a.Timeline != b.Timeline:
		return a.Timeline > b.Timeline
	case a.Received != b.Received:
		return a.Received > b.Received
	case a.Replayed != b.Replayed:
		return a.Replayed > b.Replayed
	case a.Priority != b.Priority:
		return a.Priority > b.Priority
	}
	return a.Name < b.Name
}

// Sort orders candidates best first, by Less.
func Sort(rs []Rank) {
	slices.SortFunc(rs, func(a, b Rank) int {
		switch {
		case Less(a, b):
			return -1
		case Less(b, a):
			return 1
		}
		return 0
	})
}

// Position is the furthest WAL a standby has: received or replayed.
func Position(recv, replay state.LSN) state.LSN {
	return max(recv, replay)
}
