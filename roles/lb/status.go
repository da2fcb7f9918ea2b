package lb

import (
	"fmt"
	"io"
	"time"

	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/embed/vip"
	"github.com/haagent/haagent/roles/node"
)

// StatusDoc is the document behind /status and `haagent status` on an lb.
type StatusDoc struct {
	Role    string `json:"role"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Impl is builtin or nginx; with nginx the backends' states are unknown.
	Impl     string                       `json:"impl"`
	Policy   string                       `json:"policy"`
	Backends []loadbalancer.BackendStatus `json:"backends"`
	// VIP is the virtual IP as this lb sees it, with --vip only.
	VIP *vip.Status `json:"vip,omitempty"`
	// CertWarnings are this lb's certificates that expire within 120 days.
	CertWarnings []node.CertWarning `json:"certWarnings,omitempty"`
}

// PrintStatus writes the VIP, if any, then doc's backends as an aligned table: port,
// backend, state, active and total connections, last error.
func PrintStatus(w io.Writer, doc StatusDoc) {
	if v := doc.VIP; v != nil {
		holder, since := v.Holder, "-"
		if holder == "" {
			holder = "none"
		}
		if v.Since != nil {
			since = v.Since.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "VIP %s on %s: holder %s (this host: %t) since %s, takeovers by this host %d\n",
			v.Address, v.Interface, holder, v.Holding, since, v.Takeovers)
		if v.RetryAt != nil {
			fmt.Fprintf(w, "VIP election: out until %s, after a failed term (this host can't take the VIP before then)\n", v.RetryAt.UTC().Format(time.RFC3339))
		}
		if v.LastError != "" {
			fmt.Fprintf(w, "VIP last error: %s\n", v.LastError)
		}
	}
	loadbalancer.PrintBackends(w, doc.Backends)
	node.PrintCertWarnings(w, doc.CertWarnings)
}
