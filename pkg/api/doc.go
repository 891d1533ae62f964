// Package api is the agents' HTTP API as both sides see it: the wire types
// of every endpoint, the one strict request decoder, and the one client
// (TLS with a private CA, a client certificate, the bearer token or basic
// auth, bounded bodies) used by peers, cifhactl, pkg/ctl and cif-sync. It
// links neither the daemon, prometheus nor pgx.
package api
