// Package addons owns the cluster's add-ons: the manifests kept in etcd under
// /haagent/addons/ (one copy for every master, so that a manifest put on one master is
// applied cluster-wide), the built-in ones haagent renders itself (CoreDNS), and the
// controller that, on one master at a time, applies them with server-side apply and
// haagent's own field manager, and deletes the objects a manifest no longer holds.
package addons

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// The add-ons' keys in etcd.
const (
	Prefix = "/haagent/addons/"
	// ManifestsPrefix + NAME holds the YAML of the operator's add-on NAME, put with
	// 'haagent addons put'.
	ManifestsPrefix = Prefix + "manifests/"
	// DisabledPrefix + MASTER holds the built-in add-ons that master's --disable names
	// (a JSON list): a built-in is disabled when any master disables it.
	DisabledPrefix = Prefix + "disabled/"
	// StatusPrefix + NAME holds NAME's State, written by the master that applies it.
	StatusPrefix = Prefix + "status/"
	// ElectionPrefix is the election of the one master that applies.
	ElectionPrefix = Prefix + "applier"
)

// FieldManager is haagent's field manager in server-side apply.
const FieldManager = "haagent"

// NameLabel marks every object an add-on applies with the add-on's name.
const NameLabel = "addons.haagent.io/name"

// Sources of an add-on.
const (
	SourceBuiltin  = "builtin"
	SourceManifest = "manifest"
)

// Phases of an add-on.
const (
	// PhaseApplied: every object of the manifest was applied, and the ones it no longer
	// holds were deleted.
	PhaseApplied = "Applied"
	// PhaseFailed: the manifest does not parse, or the server refused an object. What
	// applied stays, and nothing is deleted until the manifest applies in full.
	PhaseFailed = "Failed"
	// PhaseDisabled: a built-in that a master's --disable names; its objects are deleted.
	PhaseDisabled = "Disabled"
)

// Ref names one applied object.
type Ref struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// State is an add-on's last pass, as `haagent status` and `haagent addons list` show it.
type State struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Phase  string `json:"phase"`
	// Hash is the manifest's sha256, the one the phase is about.
	Hash string `json:"hash,omitempty"`
	// Objects are the objects haagent applied and has not deleted: a later pass deletes
	// the ones the manifest no longer holds.
	Objects []Ref  `json:"objects,omitempty"`
	Error   string `json:"error,omitempty"`
	// DisabledBy are the masters whose --disable names this built-in.
	DisabledBy []string `json:"disabledBy,omitempty"`
	// By is the master that applied it, At when the phase, hash or error last changed.
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// validName is an add-on's name: it is a label value and a key in etcd.
var validName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// CheckName says why name can't name an add-on, or nil.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("%q is not an add-on name (lower case letters, digits and '-', at most 63)", name)
	}
	return nil
}

// Parse reads a manifest: YAML documents (or JSON), each one object, and List kinds
// unfolded. Every object needs apiVersion, kind and metadata.name; name is the add-on,
// for the errors.
func Parse(name string, data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for doc := 1; ; doc++ {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("add-on %s, document %d: %w", name, doc, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			l, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("add-on %s, document %d: %w", name, doc, err)
			}
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
			continue
		}
		objs = append(objs, u)
	}
	var errs []error
	for i, u := range objs {
		var missing []string
		if u.GetAPIVersion() == "" {
			missing = append(missing, "apiVersion")
		}
		if u.GetKind() == "" {
			missing = append(missing, "kind")
		}
		if u.GetName() == "" {
			missing = append(missing, "metadata.name")
		}
		if len(missing) > 0 {
			errs = append(errs, fmt.Errorf("add-on %s, object %d (%s %s): no %s", name, i+1, u.GetKind(), u.GetName(), strings.Join(missing, ", ")))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("add-on %s: no objects", name)
	}
	// Namespaces and CRDs first: the objects after them may live in them or be of them.
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return applyOrder(a) - applyOrder(b) })
	return objs, nil
}

func applyOrder(u *unstructured.Unstructured) int {
	switch u.GetKind() {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	}
	return 2
}

// Hash is a manifest's sha256, the one its State is about: 'addons put' waits for the
// State with the hash of what it stored.
func Hash(manifest []byte) string {
	sum := sha256.Sum256(manifest)
	return hex.EncodeToString(sum[:])
}

// RefOf names u.
func RefOf(u *unstructured.Unstructured) Ref {
	return Ref{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
}

// Print writes the add-ons as a table, and each one's error under it.
func Print(w io.Writer, states []State) {
	if len(states) == 0 {
		fmt.Fprintln(w, "add-ons: none applied yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADD-ON\tSOURCE\tSTATE\tOBJECTS\tSINCE\tBY")
	for _, s := range states {
		phase := s.Phase
		if len(s.DisabledBy) > 0 {
			phase += " (--disable on " + strings.Join(s.DisabledBy, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, s.Source, phase, len(s.Objects), s.At.Format(time.RFC3339), s.By)
	}
	tw.Flush()
	for _, s := range states {
		if s.Error != "" {
			fmt.Fprintf(w, "add-on %s: %s\n", s.Name, s.Error)
		}
	}
}
