package vip

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestFindInterface(t *testing.T) {
	// An address in no subnet of this host, whatever its interfaces are.
	var outside netip.Prefix
	for i := 1; i < 250 && !outside.IsValid(); i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 77, 10}), 24)
		if !hostHas(t, p.Addr()) {
			outside = p
		}
	}
	if !outside.IsValid() {
		t.Fatal("every 10.x.77.10 is in a subnet of this host")
	}
	lo := netip.MustParsePrefix("127.0.0.10/8")
	tests := []struct {
		name, iface string
		vip         netip.Prefix
		want, err   string
	}{
		{"named interface holding the subnet", "lo", lo, "lo", ""},
		{"found by subnet", "", lo, "lo", ""},
		{"interface that does not exist", "nosuch0", lo, "", "--vip-iface: no interface \"nosuch0\""},
		{"outside the named interface's subnets", "lo", outside, "", "--vip: " + outside.Addr().String() + " is outside every subnet of lo (127.0.0.0/8)"},
		{"in no subnet of the host", "", outside, "", "--vip: " + outside.Addr().String() + " is in no subnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindInterface(tt.vip, tt.iface)
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Fatalf("FindInterface(%s, %q) = %q, %v; want %q", tt.vip, tt.iface, got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("FindInterface(%s, %q) = %q, %v; want one line with %q", tt.vip, tt.iface, got, err, tt.err)
			}
		})
	}
}

func hostHas(t *testing.T, ip netip.Addr) bool {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifi := range ifs {
		subnets, err := ipv4Subnets(&ifi)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range subnets {
			if p.Contains(ip) {
				return true
			}
		}
	}
	return false
}
