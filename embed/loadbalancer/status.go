package loadbalancer

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// PrintBackends writes backends as an aligned table: port, backend, state, active and
// total connections, last error. `haagent status` prints it on an lb and on a
// minion that runs its own lb.
func PrintBackends(w io.Writer, backends []BackendStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tBACKEND\tSTATE\tACTIVE\tTOTAL\tLAST ERROR")
	for _, b := range backends {
		lastErr := b.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n",
			b.Port, b.Address, b.State, b.Active, strconv.FormatUint(b.Total, 10), lastErr)
	}
	_ = tw.Flush()
}
