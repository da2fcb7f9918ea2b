package vip

import "testing"

func TestProvesLeaderless(t *testing.T) {
	eps := []string{"https://m1:2379", "https://m2:2379", "https://m3:2379"}
	learnt := map[string]uint64{eps[0]: 1, eps[1]: 2, eps[2]: 3}
	refused := answer{refused: true}
	silent := answer{}
	tests := []struct {
		name    string
		answers []answer
		ids     map[string]uint64
		want    bool
	}{
		{"all answer without a leader", []answer{{id: 1}, {id: 2}, {id: 3}}, nil, true},
		{"two down, the third without a leader", []answer{{id: 1}, refused, refused}, nil, true},
		{"two down, the third still names one of them", []answer{{id: 1, leader: 2}, refused, refused}, learnt, true},
		{"the named leader is down but its ID was never learnt", []answer{{id: 1, leader: 2}, refused, refused}, nil, false},
		{"a member names a leader that is up", []answer{{id: 1, leader: 3}, {id: 2}, {id: 3, leader: 3}}, nil, false},
		{"a leader is named by one, others don't answer", []answer{{id: 1, leader: 1}, silent, silent}, nil, false},
		// Cut off: no answer is no proof, whatever it hides.
		{"nobody answers", []answer{silent, silent, silent}, learnt, false},
		{"one without a leader, two silent", []answer{{id: 1}, silent, silent}, nil, false},
		{"one refused, one without a leader, one silent", []answer{refused, {id: 2}, silent}, nil, true},
		// The leader blackholed or frozen, seen from a holder that reaches the others.
		{"the two that answer name the silent one", []answer{silent, {id: 2, leader: 1}, {id: 3, leader: 1}}, learnt, true},
		{"the two that answer name a silent one never learnt", []answer{silent, {id: 2, leader: 1}, {id: 3, leader: 1}}, nil, false},
		{"one answers and names a silent one: the holder may be the one cut off", []answer{silent, {id: 2, leader: 1}, silent}, learnt, false},
		{"one names the silent leader, the other has moved on to a new one", []answer{silent, {id: 2, leader: 1}, {id: 3, leader: 3}}, learnt, false},
		{"one names the silent leader, the other has none yet", []answer{silent, {id: 2, leader: 1}, {id: 3}}, learnt, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := map[string]uint64{}
			for k, v := range tt.ids {
				ids[k] = v
			}
			if got := provesLeaderless(eps, tt.answers, ids); got != tt.want {
				t.Fatalf("provesLeaderless = %v, want %v", got, tt.want)
			}
			for i, a := range tt.answers {
				if a.id != 0 && ids[eps[i]] != a.id {
					t.Errorf("the ID of %s was not recorded: %v", eps[i], ids)
				}
			}
		})
	}
}
