package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"

	"github.com/haagent/haagent/base/release"
)

// genMan writes a man page for every command into dir (haagent.1, haagent-member-remove.1
// and so on). haagent.1 lists every role's flags, which --help shows only for the role
// it names.
func genMan(dir string) error {
	// A tree of its own, with no role and no environment: the pages are the same
	// whatever HAAGENT_ROLE the build runs with.
	noEnv := func(string) (string, bool) { return "", false }
	root, _ := newRoot(stdio{io.Discard, io.Discard, noEnv}, nil)
	var b strings.Builder
	b.WriteString(rootLong + "\n\nThe options of each role follow; those of every role come after them.\n\n")
	for _, name := range roleNames {
		r, _ := roles(name)
		fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
		fs.SortFlags = false
		r.addFlags(fs)
		fmt.Fprintf(&b, "# OPTIONS OF THE %s ROLE\n", strings.ToUpper(name))
		fs.VisitAll(func(f *pflag.Flag) {
			def := f.DefValue
			if f.Value.Type() == "string" {
				def = fmt.Sprintf("%q", def)
			}
			// As doc prints the OPTIONS, so that every flag reads the same.
			fmt.Fprintf(&b, "**--%s**=%s\n\t%s\n\n", f.Name, def, f.Usage)
		})
	}
	root.Long = b.String()
	var noGenTag func(c *cobra.Command)
	noGenTag = func(c *cobra.Command) {
		c.DisableAutoGenTag = true // no HISTORY section with the date of the build
		for _, s := range c.Commands() {
			noGenTag(s)
		}
	}
	noGenTag(root)
	header := &doc.GenManHeader{Section: "1", Source: "haagent " + release.Version, Manual: "haagent manual"}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("man pages into %s: %w", dir, err)
	}
	return nil
}
