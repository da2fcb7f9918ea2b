package chaos

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The model itself, on small hand-made histories: each anomaly that the chaos run
// claims to catch is caught, and an unknown write is neither required nor forbidden.
func TestModel(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	put := func(c int, v string, call, ret int) Op {
		return Op{Client: c, Input: Input{Kind: Put, Key: "x", Value: v}, Call: ms(call), Return: ms(ret)}
	}
	lost := func(c int, v string, call int) Op {
		return Op{Client: c, Input: Input{Kind: Put, Key: "x", Value: v}, Output: Output{Unknown: true}, Call: ms(call)}
	}
	get := func(c int, v string, call, ret int) Op {
		return Op{Client: c, Input: Input{Kind: Get, Key: "x"}, Output: Output{Value: v}, Call: ms(call), Return: ms(ret)}
	}
	cas := func(c int, expect, v string, swapped bool, call, ret int) Op {
		return Op{Client: c, Input: Input{Kind: CAS, Key: "x", Expect: expect, Value: v}, Output: Output{Swapped: swapped}, Call: ms(call), Return: ms(ret)}
	}
	for _, tc := range []struct {
		name    string
		history []Op
		want    porcupine.CheckResult
	}{
		{"sequential", []Op{put(0, "a", 0, 1), get(1, "a", 2, 3), put(0, "b", 4, 5), get(1, "b", 6, 7)}, porcupine.Ok},
		{"concurrent read sees either", []Op{put(0, "a", 0, 10), get(1, "", 1, 2), get(1, "a", 3, 4)}, porcupine.Ok},
		{"acknowledged write lost", []Op{put(0, "a", 0, 1), get(1, "", 2, 3)}, porcupine.Illegal},
		{"stale read", []Op{put(0, "a", 0, 1), put(0, "b", 2, 3), get(1, "a", 4, 5)}, porcupine.Illegal},
		{"overwritten write reappears", []Op{put(0, "a", 0, 1), put(0, "b", 2, 3), get(1, "b", 4, 5), get(1, "a", 6, 7)}, porcupine.Illegal},
		{"unknown write never applied", []Op{lost(0, "a", 0), get(1, "", 5, 6), put(2, "b", 7, 8), get(1, "b", 9, 10)}, porcupine.Ok},
		{"unknown write applied late", []Op{lost(0, "a", 0), get(1, "", 5, 6), get(1, "a", 9, 10)}, porcupine.Ok},
		{"unknown write applied before its call", []Op{get(1, "a", 0, 1), lost(0, "a", 2)}, porcupine.Illegal},
		{"cas", []Op{put(0, "a", 0, 1), cas(1, "a", "b", true, 2, 3), cas(0, "a", "c", false, 4, 5), get(1, "b", 6, 7)}, porcupine.Ok},
		{"cas swapped on a wrong value", []Op{put(0, "a", 0, 1), cas(1, "z", "b", true, 2, 3)}, porcupine.Illegal},
		{"cas failed on the right value", []Op{put(0, "a", 0, 1), cas(1, "a", "b", false, 2, 3)}, porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Check(tc.history, 10*time.Second, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != tc.want {
				t.Fatalf("verdict %s, want %s (%s)", r.Verdict, tc.want, r)
			}
			if tc.want == porcupine.Illegal && (len(r.Anomalies) != 1 || r.Anomalies[0] != "x" || r.Visualization == "") {
				t.Errorf("an illegal history names key x and has a visualization: %s, %q", r, r.Visualization)
			}
		})
	}
}

func TestLongestGap(t *testing.T) {
	s := time.Second
	h := []Op{
		{Call: 0, Return: 1 * s},
		{Call: 1 * s, Output: Output{Unknown: true}},
		{Call: 2 * s, Return: 5 * s},
		{Call: 3 * s, Return: 4 * s},
	}
	if g, from := longestGap(h); g != 3*s || from != 1*s {
		t.Fatalf("longest gap %s from %s, want 3s from 1s (the answer at 1s to the one at 4s)", g, from)
	}
	if g, from := LongestGapIn(h, 2*s, 8*s); g != 3*s || from != 5*s {
		t.Fatalf("longest gap in [2s, 8s] %s from %s, want 3s from 5s (the last answer to the window's end)", g, from)
	}
}
