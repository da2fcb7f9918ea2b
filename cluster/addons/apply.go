package addons

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// Applier applies objects to the apiserver with server-side apply, as haagent's field
// manager, and deletes them.
type Applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// NewApplier connects as the kubeconfig at path says.
func NewApplier(kubeconfig string) (*Applier, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return NewApplierForConfig(cfg)
}

// NewApplierForConfig connects with cfg.
func NewApplierForConfig(cfg *rest.Config) (*Applier, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "haagent-addons"
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// ObjectError is the server's refusal of one object.
type ObjectError struct {
	Ref Ref
	Err error
}

func (e *ObjectError) Error() string { return e.Ref.String() + ": " + e.Err.Error() }
func (e *ObjectError) Unwrap() error { return e.Err }

// Apply applies every object, labelled as add-on name's, in order, and returns the
// refs of the ones applied (namespaced objects without a namespace go to "default").
// A refused object is an *ObjectError among the joined errors, and the rest are still
// applied; an error that is not the server's answer about one object (the apiserver
// can't be reached) ends the pass early.
func (a *Applier) Apply(ctx context.Context, name string, objs []*unstructured.Unstructured) ([]Ref, error) {
	var applied []Ref
	var errs []error
	for _, o := range objs {
		o = o.DeepCopy()
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[NameLabel] = name
		o.SetLabels(labels)
		ri, ns, err := a.resource(ctx, o.GroupVersionKind(), o.GetNamespace())
		if err != nil {
			if !meta.IsNoMatchError(err) {
				return applied, fmt.Errorf("discovery: %w", err)
			}
			errs = append(errs, &ObjectError{Ref: RefOf(o), Err: err})
			continue
		}
		o.SetNamespace(ns)
		_, err = ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err != nil {
			if !isAnswer(err) {
				return applied, fmt.Errorf("apply %s: %w", RefOf(o), err)
			}
			errs = append(errs, &ObjectError{Ref: RefOf(o), Err: err})
			continue
		}
		applied = append(applied, RefOf(o))
		if o.GetKind() == "CustomResourceDefinition" {
			// Objects of the new kind may follow in the same manifest.
			a.mapper.Reset()
		}
	}
	return applied, errors.Join(errs...)
}

// Delete deletes the objects, in the reverse of their order (a namespace last); one
// already gone, or whose kind the apiserver no longer serves, is not an error.
func (a *Applier) Delete(ctx context.Context, refs []Ref) error {
	var errs []error
	for i := len(refs) - 1; i >= 0; i-- {
		r := refs[i]
		gv, err := schema.ParseGroupVersion(r.APIVersion)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", r, err))
			continue
		}
		ri, _, err := a.resource(ctx, gv.WithKind(r.Kind), r.Namespace)
		if meta.IsNoMatchError(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		bg := metav1.DeletePropagationBackground
		err = ri.Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", r, err))
		}
	}
	return errors.Join(errs...)
}

// rootCAGVR is the ConfigMaps' resource.
var rootCAGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// RootCAHash is the sha256 of the CA bundle that pods in kube-system trust (the
// kube-root-ca.crt ConfigMap the controller-manager keeps). Until the controller-manager
// has made it, a new cluster's first seconds, it is an error: pods could not start
// anyway, and built-ins applied without it would roll once it comes.
func (a *Applier) RootCAHash(ctx context.Context) (string, error) {
	u, err := a.dyn.Resource(rootCAGVR).Namespace(metav1.NamespaceSystem).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", errors.New("waiting for the controller-manager to make kube-system/kube-root-ca.crt")
	}
	if err != nil {
		return "", fmt.Errorf("read kube-system/kube-root-ca.crt: %w", err)
	}
	ca, _, _ := unstructured.NestedString(u.Object, "data", "ca.crt")
	sum := sha256.Sum256([]byte(ca))
	return hex.EncodeToString(sum[:8]), nil
}

// resource maps a kind to the client of its resource, with the namespace it goes in
// ("" for a cluster-scoped one).
func (a *Applier) resource(ctx context.Context, gvk schema.GroupVersionKind, ns string) (dynamic.ResourceInterface, string, error) {
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		// A kind the cache has not seen may have been added since (a CRD).
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, "", err
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource), "", nil
	}
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return a.dyn.Resource(m.Resource).Namespace(ns), ns, nil
}

// isAnswer says whether err is the apiserver's answer about the object (invalid,
// forbidden, conflict...), not a failure to reach it.
func isAnswer(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return false
	}
	code := st.Status().Code
	return code >= 400 && code < 500 && code != 429
}
