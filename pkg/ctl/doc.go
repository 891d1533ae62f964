// Package ctl implements cifhactl's commands on top of etcd (for reading the
// cluster) and the agents' HTTP APIs (for fresh member state).
package ctl
