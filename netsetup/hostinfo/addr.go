package hostinfo

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// InterfaceIPv4 returns the first global-scope IPv4 address on the named interface.
func InterfaceIPv4(name string) (net.IP, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", name, err)
	}
	var fallback net.IP
	for _, a := range addrs {
		if a.IP.IsLoopback() && fallback == nil {
			fallback = a.IP
			continue
		}
		if a.IP.IsGlobalUnicast() {
			return a.IP, nil
		}
	}
	if fallback != nil {
		// A loopback interface is a legitimate choice in single-host setups and tests.
		return fallback, nil
	}
	return nil, errors.New("interface " + name + " has no IPv4 address")
}

// ShortHostname is the hostname up to its first dot, the default node name.
func ShortHostname() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", err
	}
	short, _, _ := strings.Cut(h, ".")
	return short, nil
}
