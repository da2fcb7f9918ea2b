package join

import (
	"context"
	"fmt"
	"net/http"
	"slices"
)

// checkReserved refuses a minion or lb that asks for a master's name, whatever proves
// its request: its certificates would carry that name.
func (s *Server) checkReserved(ctx context.Context, req Request) *refusal {
	if req.Role == "master" || s.cfg.MasterNames == nil {
		return nil
	}
	names, err := s.cfg.MasterNames(ctx)
	if err != nil {
		s.cfg.Logger.Warn("join: could not list the masters' names", "node", req.Name, "err", err)
		return &refusal{http.StatusServiceUnavailable, "the node name can't be checked yet; try again", ReasonUnavailable}
	}
	if slices.Contains(names, req.Name) {
		return &refusal{http.StatusForbidden, fmt.Sprintf("the name %q is a master's; give this %s another --name", req.Name, req.Role), ReasonNameTaken}
	}
	return nil
}
