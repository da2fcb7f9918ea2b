package etcdmember

import (
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func TestIsEtcdError(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"nil", nil, rpctypes.ErrMemberNotFound, false},
		{"converted by clientv3", rpctypes.ErrMemberNotFound, rpctypes.ErrMemberNotFound, true},
		{"raw gRPC status", rpctypes.ErrGRPCMemberNotFound, rpctypes.ErrMemberNotFound, true},
		{"already promoted", rpctypes.ErrGRPCMemberNotLearner, rpctypes.ErrMemberNotLearner, true},
		{"learner not in sync is not 'not a learner'", rpctypes.ErrGRPCLearnerNotReady, rpctypes.ErrMemberNotLearner, false},
		{"peer URL taken", rpctypes.ErrGRPCPeerURLExist, rpctypes.ErrPeerURLExist, true},
		{"other etcd error", rpctypes.ErrGRPCNoLeader, rpctypes.ErrPeerURLExist, false},
		{"plain error", errors.New("etcdserver: member not found, but not from etcd"), rpctypes.ErrMemberNotFound, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := isEtcdError(tt.err, tt.target); got != tt.want {
				t.Errorf("isEtcdError(%v, %v) = %v, want %v", tt.err, tt.target, got, tt.want)
			}
		})
	}
}
