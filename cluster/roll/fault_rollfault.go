//go:build rollfault

package roll

// gateFault, when the linker stamps it in (-X github.com/haagent/haagent/cluster/roll.gateFault=...)
// in a build with the rollfault tag, makes every gate of that build fail with it: the
// roll test's broken release, as etcd's gofail failpoints break a test build of etcd.
// Release builds have no such tag, so neither the variable nor the hook.
var gateFault string

func faultGate() string { return gateFault }
