// Command bench measures haagent against baselines in one run and prints the tables
// that docs/benchmarks.md quotes. Figures are medians over several rounds; ratios compare
// haagent with the baseline measured in the same run on the same machine.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

func main() {
	rounds := flag.Int("rounds", 5, "rounds per measurement")
	only := flag.String("only", "", "comma-separated sections to run (master, lb, auth, pods, step, nodelocal, vip); default all")
	flag.Parse()
	bin := os.Getenv("HAAGENT_BIN")
	if bin == "" {
		bin = "bin/haagent"
	}
	sections := []struct {
		name string
		run  func(bin string, rounds int) (table, error)
	}{
		{"master", benchMaster},
		{"lb", benchLB},
		{"auth", benchAuth},
		{"pods", benchPods},
		{"step", benchSeedStep},
		{"vip", benchVIP},
		{"nodelocal", benchNodeLocal},
	}
	failed := false
	for _, s := range sections {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), s.name) {
			continue
		}
		t, err := s.run(bin, *rounds)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", s.name, err)
			failed = true
			continue
		}
		t.print(os.Stdout)
	}
	if failed {
		os.Exit(1)
	}
}

// table is one section's results in markdown.
type table struct {
	title  string
	header []string
	rows   [][]string
	notes  []string
}

func (t table) print(w *os.File) {
	fmt.Fprintf(w, "\n### %s\n\n", t.title)
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.header, " | "))
	seps := make([]string, len(t.header))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(seps, " | "))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	for _, n := range t.notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
