// Command airgapimages writes the images a haagent cluster runs besides the operator's
// own (CoreDNS, the cluster DNS add-on) as a docker-archive tarball, for sites with no
// registry: dropped into a minion's /var/lib/haagent/images/ (--images-dir), it is
// imported into containerd at the next start. `make airgap` runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/haagent/haagent/cluster/addons"
	"github.com/haagent/haagent/test/framework/images"
)

func main() {
	coredns := flag.String("coredns", "", "the CoreDNS binary (scripts/build-kube.sh coredns builds it)")
	out := flag.String("o", "", "the tarball to write")
	flag.Parse()
	if *coredns == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "airgapimages: -coredns and -o are required, e.g. -coredns=/var/cache/haagent/kube/coredns-"+addons.CoreDNSVersion+"/bin/coredns -o=dist/airgap.tar")
		os.Exit(2)
	}
	img, err := images.CoreDNSFrom(*coredns)
	if err == nil {
		err = images.WriteTarball(img, addons.CoreDNSImage, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "airgapimages:", err)
		os.Exit(1)
	}
	fmt.Println(*out, "holds", addons.CoreDNSImage)
}
