// Package agent is cifha's per-host daemon: one goroutine observes the local
// postgres and the cluster's keys in etcd, asks the pure Decide function
// what to do, and does it; an HTTP API publishes what it last saw.
//
// Decide is the only place decisions are made. It takes an Observation
// (including the time) and returns a Plan (an action, a target and a
// human-readable reason). Everything with side effects sits behind the small
// Postgres and DCS interfaces so the loop can be tested with fakes.
package agent
