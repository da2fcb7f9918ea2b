// Command etcd is etcd's own server main (etcdmain), at the version haagent embeds, for
// the conformance suite's etcd image: its aggregator spec runs /usr/local/bin/etcd
// beside the sample-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
