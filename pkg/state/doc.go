// Package state holds cifha's value types: what is stored in etcd (members,
// the leader key as read, last-leader, requests, cluster-wide settings),
// the agent's lease as it knows it, and what a local postgres reports (WAL
// positions, status, data directory role). It is pure: no I/O, no clock, no
// etcd client, no pgx, so that the decision core (pkg/ha) and the
// operator's tool can use these types without linking the daemon's
// dependencies. pkg/election and pkg/pgctl re-export them as aliases.
package state
