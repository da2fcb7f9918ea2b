//go:build !rollfault

package roll

// faultGate is the gate fault of a test build (fault_rollfault.go); a release build has
// none.
func faultGate() string { return "" }
