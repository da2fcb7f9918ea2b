package node

import (
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/spf13/pflag"
)

// MastersFlag is the flag that lists the masters, primary first: the lb's, and a
// minion's that runs its own lb (--lb=local).
const MastersFlag = "masters"

// AddMastersFlag binds --masters to ms, with the role's usage.
func AddMastersFlag(fs *pflag.FlagSet, ms *[]string, usage string) {
	fs.StringSliceVar(ms, MastersFlag, *ms, usage)
}

// TrimMasters trims the blanks around each entry, in place.
func TrimMasters(ms []string) {
	for i, m := range ms {
		ms[i] = strings.TrimSpace(m)
	}
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

// ValidateMasters reports every malformed entry of --masters, each naming the flag and
// the fix: an entry is an IP or a hostname, with no port or scheme, listed once. It
// does no I/O; whether the list may be empty is the role's to say.
func ValidateMasters(ms []string) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", MastersFlag, fmt.Sprintf(format, args...)))
	}
	seen := map[string]bool{}
	for _, m := range ms {
		switch {
		case m == "":
			bad("has an empty entry; remove the stray comma")
		case strings.Contains(m, "="), strings.Contains(m, "://"):
			bad("%q is not a plain host; give IPs or hostnames only, e.g. 10.0.0.11", m)
		case net.ParseIP(m) != nil:
		case strings.Contains(m, ":"):
			bad("%q has a port; give hosts only, e.g. 10.0.0.11", m)
		case !hostnameRE.MatchString(m):
			bad("%q is not an IP address or hostname", m)
		}
		key := strings.ToLower(m)
		if ip := net.ParseIP(m); ip != nil {
			key = ip.String()
		}
		if m != "" && seen[key] {
			bad("%q is listed twice; list each master once", m)
		}
		seen[key] = true
	}
	return errs
}
