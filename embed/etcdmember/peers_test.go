package etcdmember

import (
	"slices"
	"strings"
	"testing"
)

func TestParsePeers(t *testing.T) {
	tests := []struct {
		in      string
		want    string // in --initial-cluster form
		wantErr string
	}{
		{in: "master1=http://10.0.0.21:2380,master2=http://10.0.0.22:2380", want: "master1=http://10.0.0.21:2380,master2=http://10.0.0.22:2380"},
		{in: "centos-master-1,centos-master-2", want: "centos-master-1=http://centos-master-1:2380,centos-master-2=http://centos-master-2:2380"},
		{in: " a=http://10.0.0.1 , 10.0.0.2 ", want: "a=http://10.0.0.1:2380,10.0.0.2=http://10.0.0.2:2380"},
		{in: "v6=https://[fd00::1]:2390", want: "v6=https://[fd00::1]:2390"},
		{in: "", wantErr: "empty list"},
		{in: "a=http://10.0.0.1:2380,", wantErr: "empty entry"},
		{in: "a=ftp://10.0.0.1:2380", wantErr: "scheme"},
		{in: "a=http://10.0.0.1:2380/path", wantErr: "nothing after the port"},
		{in: "a=http://10.0.0.1:99999", wantErr: "not in 1-65535"},
		{in: "=http://10.0.0.1:2380", wantErr: "empty member name"},
		{in: "a=http://:2380", wantErr: "empty host"},
		{in: "a=http://10.0.0.1:2380,a=http://10.0.0.2:2380", wantErr: "duplicate name"},
		{in: "a=http://10.0.0.1:2380,b=http://10.0.0.1:2380", wantErr: "duplicate peer URL"},
		{in: "host_with_underscore", wantErr: "not an IP address or a DNS name"},
		{in: "-bad-", wantErr: "not an IP address or a DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ps, err := ParsePeers(tt.in, "http", 2380)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePeers(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePeers(%q): %v", tt.in, err)
			}
			if got := ps.String(); got != tt.want {
				t.Fatalf("ParsePeers(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParsePeers checks that any accepted list round-trips through its
// --initial-cluster form, and that parsing never panics.
func FuzzParsePeers(f *testing.F) {
	for _, s := range []string{
		"master1=http://10.0.0.21:2380,master2=http://10.0.0.22:2380,master3=http://10.0.0.23:2380",
		"centos-master-1,centos-master-2,centos-master-3",
		"a=https://[::1]:1", "x=http://h", "a,a", "=,=", "a=http://b:0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePeers(s, "http", 2380)
		if err != nil {
			return
		}
		again, err := ParsePeers(ps.String(), "http", 2380)
		if err != nil {
			t.Fatalf("round trip of %q via %q: %v", s, ps.String(), err)
		}
		if again.String() != ps.String() {
			t.Fatalf("round trip of %q: %q != %q", s, again.String(), ps.String())
		}
		names := map[string]bool{}
		for _, p := range ps {
			if names[p.Name] {
				t.Fatalf("%q: duplicate name %q accepted", s, p.Name)
			}
			names[p.Name] = true
		}
		// The flag parses at Set and settles the port and the scheme at Resolve: it
		// must come to the same list.
		var v PeersValue
		if err := v.Set(s); err != nil {
			t.Fatalf("ParsePeers took %q, PeersValue.Set refused it: %v", s, err)
		}
		want := slices.Clone(ps)
		for i := range want {
			want[i].URL.Scheme = "https"
		}
		if got := v.Resolve("https", 2380); got.String() != want.String() {
			t.Fatalf("%q: PeersValue resolves to %q, ParsePeers to %q", s, got, want)
		}
	})
}
