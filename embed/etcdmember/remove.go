package etcdmember

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNoSuchMember says Remove found no member of that name or ID.
var ErrNoSuchMember = errors.New("no member has that name or ID")

// Remove removes the member named nameOrID (its name, or its ID in hex) from the
// cluster that cli reaches, and returns the member it removed. etcd refuses a
// reconfiguration until every member has been connected for a few seconds (its strict
// reconfig check); that passes on its own, so it is waited out, until ctx ends. Any
// other refusal is returned at once.
func Remove(ctx context.Context, cli *clientv3.Client, nameOrID string) (Member, error) {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return Member{}, fmt.Errorf("member list via %v: %w", cli.Endpoints(), err)
	}
	for _, m := range fromPB(list.Members) {
		if m.Name != nameOrID && types.ID(m.ID).String() != nameOrID {
			continue
		}
		var last error
		_, err := backoff.Retry(ctx, func() (struct{}, error) {
			_, last = cli.MemberRemove(ctx, m.ID)
			if last != nil && !isEtcdError(last, rpctypes.ErrUnhealthy) {
				return struct{}{}, backoff.Permanent(last)
			}
			return struct{}{}, last
		}, backoff.WithBackOff(backoff.NewConstantBackOff(500*time.Millisecond)), backoff.WithMaxElapsedTime(0))
		if err != nil {
			// On a timeout, last says why etcd refused until then.
			return Member{}, fmt.Errorf("remove member %s (%s): %w", nameOrID, types.ID(m.ID), cmp.Or(last, err))
		}
		return m, nil
	}
	return Member{}, fmt.Errorf("remove member %s: %w", nameOrID, ErrNoSuchMember)
}
