package lb

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

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
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tBACKEND\tSTATE\tACTIVE\tTOTAL\tLAST ERROR")
	for _, b := range doc.Backends {
		lastErr := b.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n",
			b.Port, b.Address, b.State, b.Active, strconv.FormatUint(b.Total, 10), lastErr)
	}
	_ = tw.Flush()
}
