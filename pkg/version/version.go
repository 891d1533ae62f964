// Package version holds cifha's build identity, set by the linker
// (-X github.com/cifha/cifha/pkg/version.Version=..., .Commit, .BuildDate)
// for both binaries. What the linker did not set comes from the build
// information the go command embeds (the VCS revision and commit time of
// a build in a git checkout), so a plain `go build` still says where it
// came from.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

var (
	// Version is cifha's version ("dev" when built without the Makefile).
	Version = "dev"
	// Commit is the git commit the binary was built from.
	Commit = ""
	// BuildDate is when it was built (RFC 3339, UTC).
	BuildDate = ""
)

// Info is the build identity.
type Info struct {
	Version, Commit, BuildDate, GoVersion string
	Modified                              bool // built from a tree with uncommitted changes
}

// Get returns the build identity, filling what the linker left unset from
// the embedded build information.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, BuildDate: BuildDate, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.time":
				if i.BuildDate == "" {
					i.BuildDate = s.Value + " (commit time)"
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	return i
}

// String is the one line `cifha version` and `cifhactl version` print
// after the program's name.
func (i Info) String() string {
	commit := i.Commit
	if commit == "" {
		commit = "unknown"
	} else if len(commit) > 12 {
		commit = commit[:12]
	}
	if i.Modified {
		commit += "+changes"
	}
	date := i.BuildDate
	if date == "" {
		date = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, built %s, %s)", i.Version, commit, date, i.GoVersion)
}
