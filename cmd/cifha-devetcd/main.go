// Command cifha-devetcd is etcd itself (go.etcd.io/etcd/server/v3/etcdmain,
// the same code as the etcd release binary, at the version in go.mod), built
// from this module so that tests and `make demo` can run a real etcd
// cluster as separate processes: one member can then be killed, frozen
// with SIGSTOP or cut off from its peers. It takes etcd's own flags. Not
// for production: install etcd from your distribution or etcd's releases.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
