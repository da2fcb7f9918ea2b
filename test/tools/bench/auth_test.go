package main

import (
	"math"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/probe"
)

// TestAuthBlockRatioCancelsDrift: with auth costing nothing and the machine slowing down
// steadily, on/off of two adjacent slices leans one way when off comes first and the
// other way when on does; the block ratio must still say 1, and must still see a real
// cost under the same drift.
func TestAuthBlockRatioCancelsDrift(t *testing.T) {
	for _, cost := range []float64{1, 0.9} {
		var off, on []authRun
		slot := 0
		run := func(scale float64) authRun {
			puts := (2000 - 50*float64(slot)) * scale // 2.5% slower per slice, on a linear slide
			slot++
			return authRun{LoadResult: probe.LoadResult{Puts: int(math.Round(puts * 1000)), Duration: 1000 * time.Second}}
		}
		for r := range 6 { // three blocks: off on, on off, ...
			if r%2 == 0 {
				off = append(off, run(1))
				on = append(on, run(cost))
			} else {
				on = append(on, run(cost))
				off = append(off, run(1))
			}
		}
		perSecond := func(r authRun) float64 { return r.PerSecond() }
		if got := authBlockRatio(off, on, perSecond); math.Abs(got-cost) > 0.005 {
			t.Errorf("auth at %.2f× on a steady slide: block ratio %.4f, want %.2f", cost, got, cost)
		}
		// A single pair of slices is off by the drift, which is what the blocks cancel.
		if r0 := on[0].PerSecond() / off[0].PerSecond(); math.Abs(r0-cost) < 0.01 {
			t.Errorf("the first two slices alone gave %.4f: the test's drift is too small to show anything", r0)
		}
	}
}
