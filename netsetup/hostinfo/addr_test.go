package hostinfo

import "testing"

func TestInterfaceIPv4Loopback(t *testing.T) {
	ip, err := InterfaceIPv4("lo")
	if err != nil {
		t.Fatal(err)
	}
	if !ip.IsLoopback() {
		t.Fatalf("lo has %s, want a loopback address", ip)
	}
}

func TestInterfaceIPv4Missing(t *testing.T) {
	if _, err := InterfaceIPv4("haagent-none0"); err == nil {
		t.Fatal("want an error for a missing interface")
	}
}
