package lb

import (
	"io"

	"github.com/haagent/haagent/loadbalancer"
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
}

// PrintStatus writes doc's backends as an aligned table: port, backend, state,
// active and total connections, last error.
func PrintStatus(w io.Writer, doc StatusDoc) {
	loadbalancer.PrintBackends(w, doc.Backends)
}
