package atrest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/haagent/haagent/trust/pki"
)

// API is the little of the apiserver's REST API a rotation needs, as the admin.
type API struct {
	server string
	hc     *http.Client
}

// NewAPI connects as the kubeconfig at path says: one that pki.Kubeconfig wrote, with
// its server and credentials embedded.
func NewAPI(path string) (*API, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the admin kubeconfig: %w", err)
	}
	server, tc, err := pki.ParseKubeconfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: is it haagent's admin kubeconfig?", path, err)
	}
	return &API{server: server, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}}, nil
}

// errSkip marks a Secret deleted or changed since the list: the apiserver has already
// written it with the write key, or it is gone.
var errSkip = errors.New("changed since the list")

// RewriteSecrets reads every Secret and writes it back unchanged, as
// 'kubectl get secrets -A -o json | kubectl replace -f -' does: the apiserver stores a
// value read with any key but the write key again, encrypted with the write key.
func (a *API) RewriteSecrets(ctx context.Context) (int, error) {
	n, cont := 0, ""
	for {
		q := url.Values{"limit": {"250"}}
		if cont != "" {
			q.Set("continue", cont)
		}
		var list struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []map[string]json.RawMessage `json:"items"`
		}
		body, err := a.do(ctx, http.MethodGet, "/api/v1/secrets?"+q.Encode(), nil)
		if err != nil {
			return n, fmt.Errorf("list the Secrets: %w", err)
		}
		if err := json.Unmarshal(body, &list); err != nil {
			return n, fmt.Errorf("list the Secrets: %w", err)
		}
		for _, item := range list.Items {
			var md struct{ Name, Namespace string }
			if err := json.Unmarshal(item["metadata"], &md); err != nil {
				return n, fmt.Errorf("a listed Secret: %w", err)
			}
			item["apiVersion"], item["kind"] = json.RawMessage(`"v1"`), json.RawMessage(`"Secret"`)
			b, err := json.Marshal(item)
			if err != nil {
				return n, err
			}
			_, err = a.do(ctx, http.MethodPut, "/api/v1/namespaces/"+url.PathEscape(md.Namespace)+"/secrets/"+url.PathEscape(md.Name), b)
			switch {
			case err == nil:
				n++
			case !errors.Is(err, errSkip):
				return n, fmt.Errorf("rewrite Secret %s/%s: %w", md.Namespace, md.Name, err)
			}
		}
		if cont = list.Metadata.Continue; cont == "" {
			return n, nil
		}
	}
}

// do makes one request, retried for a minute while the apiservers answer with errors
// (they have just been restarted with new keys), and returns the body of a 200.
func (a *API) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return backoff.Retry(ctx, func() ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, a.server+path, bytes.NewReader(body))
		if err != nil {
			return nil, backoff.Permanent(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := a.hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
			return nil, err
		case resp.StatusCode == http.StatusOK:
			return b, nil
		case resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusNotFound:
			return nil, backoff.Permanent(errSkip)
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
		}
		return nil, backoff.Permanent(fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b)))
	}, backoff.WithMaxElapsedTime(time.Minute))
}
