package vip

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/vishvananda/netlink"
)

// FindInterface checks, before anything is touched, that the VIP fits this host: with
// name set, that the interface exists and that the VIP lies in one of its IPv4
// subnets; with name empty, it returns the first interface that has such a subnet.
// The errors name the flag and the fix.
func FindInterface(vip netip.Prefix, name string) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("--vip-iface: list this host's interfaces: %w", err)
	}
	var names []string
	for _, ifi := range ifs {
		names = append(names, ifi.Name)
		if name != "" && ifi.Name != name {
			continue
		}
		subnets, err := ipv4Subnets(&ifi)
		if err != nil {
			return "", fmt.Errorf("--vip-iface: addresses of %s: %w", ifi.Name, err)
		}
		if slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(vip.Addr()) }) {
			return ifi.Name, nil
		}
		if name != "" {
			have := "none"
			if len(subnets) > 0 {
				have = joinPrefixes(subnets)
			}
			return "", fmt.Errorf("--vip: %s is outside every subnet of %s (%s); pick an address in %s's subnet, or name the interface that has it with --vip-iface",
				vip.Addr(), name, have, name)
		}
	}
	if name != "" {
		return "", fmt.Errorf("--vip-iface: no interface %q on this host; name one of %s", name, strings.Join(names, ", "))
	}
	return "", fmt.Errorf("--vip: %s is in no subnet of this host's interfaces; pick an address in the lbs' shared subnet, or name the interface with --vip-iface", vip.Addr())
}

// ipv4Subnets are the networks of an interface's IPv4 addresses.
func ipv4Subnets(ifi *net.Interface) ([]netip.Prefix, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP.To4())
		bits, _ := ipn.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, bits).Masked())
	}
	return out, nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// lifetimeSeconds is the kernel lifetime of the VIP on its holder: the holder renews
// it after each acknowledged keepalive, so only a holder that stops doing so (frozen,
// or cut off from etcd) loses it. Linux checks lifetimes at least a second apart and
// may round the check up by 250 ms, so a 1 s lifetime ends 1.0-1.25 s after the last
// refresh (see FenceWait for how a standby waits that out).
const lifetimeSeconds = 1

// host is the VIP's interface, for netlink (the address) and for ARP.
type host struct {
	link netlink.Link
	ifi  *net.Interface
	addr *netlink.Addr
}

func newHost(iface string, vip netip.Prefix) (*host, error) {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	return &host{link: link, ifi: ifi, addr: &netlink.Addr{IPNet: &net.IPNet{
		IP: vip.Addr().AsSlice(), Mask: net.CIDRMask(vip.Bits(), 32),
	}}}, nil
}

// put adds the VIP, or renews its lifetime when it is there.
func (h *host) put() error {
	a := *h.addr
	a.ValidLft, a.PreferedLft = lifetimeSeconds, lifetimeSeconds
	if err := netlink.AddrReplace(h.link, &a); err != nil {
		return fmt.Errorf("add %s to %s: %w", h.addr.IPNet, h.ifi.Name, err)
	}
	return nil
}

// del removes the VIP; an address already gone is no error.
func (h *host) del() error {
	err := netlink.AddrDel(h.link, h.addr)
	if err == nil || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return fmt.Errorf("remove %s from %s: %w", h.addr.IPNet, h.ifi.Name, err)
}

// has reports whether the VIP is on the interface.
func (h *host) has() (bool, error) {
	addrs, err := netlink.AddrList(h.link, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(h.addr.IP) }), nil
}

// GARP timing: the new holder announces itself at once, several times because a
// frame may be lost, and once more a little later for switches and hosts that were
// busy; keepalived does the same (5, then 5 more after 5 s).
var garpSchedule = []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, time.Second, 2 * time.Second}

// announce sends gratuitous ARP requests for the VIP (sender and target both the VIP,
// to the broadcast address), which Linux applies to existing neighbour entries at once,
// until the schedule ends or stop closes.
func (h *host) announce(stop <-chan struct{}) error {
	c, err := arp.Dial(h.ifi)
	if err != nil {
		return fmt.Errorf("gratuitous ARP on %s: %w", h.ifi.Name, err)
	}
	defer c.Close()
	ip, _ := netip.AddrFromSlice(h.addr.IP.To4())
	p, err := arp.NewPacket(arp.OperationRequest, h.ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
	if err != nil {
		return err
	}
	start := time.Now()
	for _, at := range garpSchedule {
		select {
		case <-stop:
			return nil
		case <-time.After(time.Until(start.Add(at))):
		}
		if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
			return fmt.Errorf("gratuitous ARP on %s: %w", h.ifi.Name, err)
		}
	}
	return nil
}

// conflictProbes and conflictWait are the address conflict probe before a take: two ARP
// requests for the VIP, each followed by a wait for an answer. A host on the same link
// answers within a millisecond; two probes cover a lost frame.
const (
	conflictProbes = 2
	conflictWait   = 25 * time.Millisecond
)

// claimant returns the MAC of another host that answers ARP for the VIP, or announces
// it, within the probes; nil when the address is free.
func (h *host) claimant() (net.HardwareAddr, error) {
	c, err := arp.Dial(h.ifi)
	if err != nil {
		return nil, fmt.Errorf("ARP probe on %s: %w", h.ifi.Name, err)
	}
	defer c.Close()
	ip, _ := netip.AddrFromSlice(h.addr.IP.To4())
	for range conflictProbes {
		if err := c.Request(ip); err != nil {
			return nil, fmt.Errorf("ARP probe on %s: %w", h.ifi.Name, err)
		}
		if err := c.SetReadDeadline(time.Now().Add(conflictWait)); err != nil {
			return nil, err
		}
		for {
			p, _, err := c.Read()
			if err != nil {
				break // the deadline: nothing (more) this round
			}
			if p.SenderIP == ip && !bytes.Equal(p.SenderHardwareAddr, h.ifi.HardwareAddr) {
				return p.SenderHardwareAddr, nil
			}
		}
	}
	return nil, nil
}
