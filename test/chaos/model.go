// Package chaos checks that etcd behind haagent's lb stays linearizable while masters
// and the lb fail: clients record every get, put and compare-and-swap they send
// through one endpoint, with when it was sent and when (if ever) it was answered, and
// porcupine (github.com/anishathalye/porcupine) decides whether some order of those
// operations, each taking effect between its call and its return, explains every
// answer. A lost acknowledged write, a stale read and an overwritten write that comes
// back all make the history not linearizable.
package chaos

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is what an operation does to its register.
type Kind int

const (
	// Get is a linearizable read (etcd's default, not serializable).
	Get Kind = iota
	// Put writes a value never written before, so that a read names the write it saw.
	Put
	// CAS writes Value only if the register holds Expect (an etcd Txn on the value).
	CAS
)

func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case CAS:
		return "cas"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Input is an operation as the client sent it.
type Input struct {
	Kind Kind
	Key  string
	// Value is what Put and CAS write.
	Value string
	// Expect is what CAS compares with; never empty (etcd fails every value compare on
	// a missing key, which a register that starts empty would not model).
	Expect string
}

// Output is the answer, or its absence.
type Output struct {
	// Value is what Get read; empty for a missing key.
	Value string
	// Swapped is whether CAS found Expect and wrote.
	Swapped bool
	// Unknown marks a write that got no answer (timeout, lost connection, server
	// error): it may have taken effect at any time after its call, or never. Its
	// return is open, past the end of the history, so that the checker may place it
	// anywhere after its call, including after everything (never applied).
	Unknown bool
}

// Op is one recorded operation; times are since the start of the run.
type Op struct {
	Client int
	Input  Input
	Output Output
	Call   time.Duration
	// Return is when the answer came; ignored for an Unknown output.
	Return time.Duration
}

// step is the register's sequential specification: state is the register's value.
func step(state, input, output any) (bool, any) {
	s, in, out := state.(string), input.(Input), output.(Output)
	switch in.Kind {
	case Get:
		return out.Value == s, s
	case Put:
		return true, in.Value
	case CAS:
		if out.Unknown {
			// Either it ran here (and swapped exactly if it found Expect), or it
			// never ran, which the checker covers by placing it last.
			if s == in.Expect {
				return true, in.Value
			}
			return true, s
		}
		if out.Swapped {
			return s == in.Expect, in.Value
		}
		return s != in.Expect, s
	}
	return false, s
}

// Model is a set of independent string registers, one per key, all empty at first;
// porcupine checks each key's history on its own.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		var parts [][]porcupine.Operation
		for _, k := range slices.Sorted(maps.Keys(byKey)) {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init:  func() any { return "" },
	Step:  step,
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		res := ""
		switch {
		case out.Unknown:
			res = " -> ?"
		case in.Kind == Get:
			res = fmt.Sprintf(" -> %q", out.Value)
		case in.Kind == CAS:
			res = fmt.Sprintf(" -> %v", out.Swapped)
		}
		switch in.Kind {
		case Get:
			return fmt.Sprintf("get(%s)%s", in.Key, res)
		case Put:
			return fmt.Sprintf("put(%s, %q)%s", in.Key, in.Value, res)
		default:
			return fmt.Sprintf("cas(%s, %q→%q)%s", in.Key, in.Expect, in.Value, res)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// Result is the verdict on a history and the figures of its run.
type Result struct {
	// Ops counts the recorded operations; Acked those answered (a get with a value, a
	// put or CAS acknowledged); Unknown the writes without an answer.
	Ops, Acked, Unknown int
	// LongestGap is the longest time, from the first call to the last return, in which
	// no operation was answered.
	LongestGap time.Duration
	// GapFrom is when the longest gap began, on the history's clock.
	GapFrom time.Duration
	// Verdict is porcupine's: Ok, Illegal, or Unknown when it ran out of time.
	Verdict porcupine.CheckResult
	// Anomalies lists the keys whose history is not linearizable.
	Anomalies []string
	// Visualization is the HTML file porcupine wrote for an Illegal history.
	Visualization string
}

func (r Result) String() string {
	return fmt.Sprintf("%d ops (%d answered, %d writes with unknown outcome), longest gap %s (from %s), verdict %s, anomalies %d %v",
		r.Ops, r.Acked, r.Unknown, r.LongestGap.Round(time.Millisecond), r.GapFrom.Round(time.Millisecond),
		r.Verdict, len(r.Anomalies), r.Anomalies)
}

// Check runs porcupine over history with timeout; on an Illegal verdict it writes the
// visualization (an HTML file) into dir.
func Check(history []Op, timeout time.Duration, dir string) (Result, error) {
	r := Result{Ops: len(history)}
	r.LongestGap, r.GapFrom = longestGap(history)
	ops, byKey := operations(history)
	for _, op := range history {
		if op.Output.Unknown {
			r.Unknown++
		} else {
			r.Acked++
		}
	}
	var info porcupine.LinearizationInfo
	r.Verdict, info = porcupine.CheckOperationsVerbose(Model, ops, timeout)
	if r.Verdict != porcupine.Illegal {
		return r, nil
	}
	// Name the bad keys: each key's history is checked alone, as the partition is.
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		if porcupine.CheckOperationsTimeout(Model, byKey[k], timeout) == porcupine.Illegal {
			r.Anomalies = append(r.Anomalies, k)
		}
	}
	if len(r.Anomalies) == 0 {
		r.Anomalies = []string{"(whole history)"}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	r.Visualization = filepath.Join(dir, "history.html")
	if err := porcupine.VisualizePath(Model, info, r.Visualization); err != nil {
		return r, fmt.Errorf("write porcupine's visualization: %w", err)
	}
	return r, nil
}

// operations converts history for porcupine, whole and by key. An unknown write
// returns after everything else, as if its answer were still on its way.
func operations(history []Op) ([]porcupine.Operation, map[string][]porcupine.Operation) {
	var end time.Duration
	for _, op := range history {
		end = max(end, op.Call, op.Return)
	}
	var ops []porcupine.Operation
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		ret := op.Return
		if op.Output.Unknown {
			ret = end + time.Hour
		}
		p := porcupine.Operation{ClientId: op.Client, Input: op.Input, Output: op.Output,
			Call: int64(op.Call), Return: int64(ret)}
		ops = append(ops, p)
		byKey[op.Input.Key] = append(byKey[op.Input.Key], p)
	}
	return ops, byKey
}

// LongestGapIn is the longest stretch within [from, to] of the history's clock without
// an answered operation, and when it began: the gap a fault caused, given the window
// from the fault to the end of the calm after it.
func LongestGapIn(history []Op, from, to time.Duration) (longest, at time.Duration) {
	var returns []time.Duration
	for _, op := range history {
		if !op.Output.Unknown && op.Return >= from && op.Return <= to {
			returns = append(returns, op.Return)
		}
	}
	returns = append(returns, to)
	slices.Sort(returns)
	prev := from
	for _, r := range returns {
		if r-prev > longest {
			longest, at = r-prev, prev
		}
		prev = r
	}
	return longest, at
}

// longestGap is the longest stretch between the first call and the last answer without
// an answered operation, and when it began.
func longestGap(history []Op) (longest, from time.Duration) {
	var first time.Duration = -1
	var returns []time.Duration
	for _, op := range history {
		if first < 0 || op.Call < first {
			first = op.Call
		}
		if !op.Output.Unknown {
			returns = append(returns, op.Return)
		}
	}
	if len(returns) == 0 {
		return 0, 0
	}
	sort.Slice(returns, func(i, j int) bool { return cmp.Less(returns[i], returns[j]) })
	prev := first
	for _, r := range returns {
		if r-prev > longest {
			longest, from = r-prev, prev
		}
		prev = max(prev, r)
	}
	return longest, from
}
