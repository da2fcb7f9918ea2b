package pki

// EncryptionKey is one key of the apiserver's encryption at rest, shared by every
// master in the sealed shared document.
type EncryptionKey struct {
	// Name is what the apiserver prefixes each value with (k8s:enc:secretbox:v1:NAME:).
	Name string `json:"name"`
	// Secret is the 32-byte secretbox key.
	Secret []byte `json:"secret"`
}
