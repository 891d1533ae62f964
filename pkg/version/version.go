// Package version holds cifha's build identity, set by the linker
// (-X github.com/cifha/cifha/pkg/version.Version=...), for both binaries.
package version

// Version is cifha's version ("dev" when built without the Makefile).
var Version = "dev"
