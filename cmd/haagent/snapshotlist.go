package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"

	"github.com/haagent/haagent/embed/snapshots"
	"github.com/haagent/haagent/roles/master"
)

// snapshotListCmd is `haagent snapshot list`: the scheduled snapshots in the master's
// --snapshot-dir, each with its checksum checked.
type snapshotListCmd struct {
	dir, root, output string
}

func (s *snapshotListCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&s.dir, "snapshot-dir", snapshots.DefaultDir, "the master's --snapshot-dir")
	fs.StringVar(&s.root, "root", master.DefaultRoot, "the master's --root")
	fs.StringVarP(&s.output, "output", "o", "text", "text or json")
}

func (s *snapshotListCmd) run(_ context.Context, w io.Writer, _ []string) error {
	if s.output != "text" && s.output != "json" {
		return usagef("--output: %q is not text or json", s.output)
	}
	if !filepath.IsAbs(s.dir) {
		return usagef("--snapshot-dir: %q must be an absolute path", s.dir)
	}
	dir := filepath.Join(s.root, s.dir)
	infos, err := snapshots.List(dir)
	if err != nil {
		return err
	}
	if s.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if infos == nil {
			infos = []snapshots.Info{}
		}
		return enc.Encode(infos)
	}
	if len(infos) == 0 {
		_, err := fmt.Fprintf(w, "no snapshots in %s\n", dir)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTIME\tSIZE\tREVISION\tCHECKSUM")
	for _, in := range infos {
		sum := "ok"
		if !in.ChecksumOK {
			sum = "BAD: " + in.Error
		}
		rev := "-"
		if in.Revision > 0 {
			rev = fmt.Sprint(in.Revision)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", in.Name, in.Time.Format(time.RFC3339), humanize.IBytes(uint64(in.Size)), rev, sum)
	}
	return tw.Flush()
}
