// Package tuning turns the seed's shell-script tuning (shmsetup.sh,
// postgressetup.sh) and its replication settings into postgresql.conf
// parameters, by server version and host memory. It is pure: callers pass
// the memory size and version in.
package tuning
