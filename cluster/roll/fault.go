package roll

// gateFault, when the linker stamps it in (-X github.com/haagent/haagent/cluster/roll.gateFault=...),
// makes every gate of that build fail with it: the roll test's broken release, as
// etcd's gofail failpoints break a test build of etcd. Release builds leave it empty.
var gateFault string

func faultGate() string { return gateFault }
