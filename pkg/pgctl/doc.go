// Package pgctl controls one local PostgreSQL instance: version detection,
// initdb, pg_basebackup, rendering of the configuration files cifha owns
// (postgresql.conf, pg_hba.conf, pg_ident.conf, standby settings for both
// recovery.conf and standby.signal eras), running postgres as a child
// process that dies with its parent, and reading its state through pgx.
//
// It knows nothing about etcd or leadership; pkg/agent decides, pgctl does.
package pgctl
