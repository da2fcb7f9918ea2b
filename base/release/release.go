// Package release holds the build's identity (version and commit), stamped in by the
// linker from the VERSION file and git.
package release

// Set with -ldflags "-X github.com/haagent/haagent/base/release.Version=...".
var (
	Version = "0.0.0-dev"
	Commit  = "unknown"
)
