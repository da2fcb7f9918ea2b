// Package version holds the build's identity, stamped in by the linker from the VERSION file and git.
package version

// Set with -ldflags "-X github.com/haagent/haagent/version.Version=...".
var (
	Version = "0.0.0-dev"
	Commit  = "unknown"
)
