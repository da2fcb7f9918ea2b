package upgrade

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Print writes the plan as `haagent upgrade plan` shows it: the versions, then the
// steps in order, then what the plan could not see.
func Print(w io.Writer, p Plan) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tCOMPONENT\tNOW\tAFTER")
	for _, r := range p.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Node, r.Role, r.Component, r.Now, r.After)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if len(p.Steps) == 0 {
		fmt.Fprintln(w, "Nothing to upgrade: every component runs the target version.")
	} else {
		fmt.Fprintln(w, "Steps, in the version-skew policy's order (one node at a time):")
		for i, s := range p.Steps {
			fmt.Fprintf(w, "%3d. %s\n", i+1, s)
		}
	}
	for _, s := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
}
