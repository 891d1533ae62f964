package state

import (
	"regexp"
	"strconv"
	"strings"
)

// NoSyncStandby is a synchronous_standby_names entry no standby matches
// (member names, which standbys connect with as application_name, cannot
// hold a space or a colon): naming it alone makes every commit wait.
const NoSyncStandby = "cifha: no synchronous standby"

// SyncStandbyNames formats synchronous_standby_names so that a commit waits
// for every one of names ("FIRST n (...)" with n = len(names); 9.6 has no
// FIRST keyword and the same meaning; v is the server_version_num). block names only NoSyncStandby; with
// neither, the value is empty (asynchronous).
func SyncStandbyNames(v int, names []string, block bool) string {
	if block {
		names = []string{NoSyncStandby}
	}
	if len(names) == 0 {
		return ""
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	prefix := "FIRST "
	if v != 0 && v < 100000 {
		prefix = ""
	}
	return prefix + strconv.Itoa(len(names)) + " (" + strings.Join(q, ", ") + ")"
}

var syncNamesRE = regexp.MustCompile(`^(?i:first\s+)?([0-9]+)\s*\((.*)\)$`)

// ParseSyncStandbyNames reads back a value SyncStandbyNames wrote; OK is
// false for anything else (a value set by hand or ALTER SYSTEM: cifha does
// not guess what it waits for).
func ParseSyncStandbyNames(s string) (out struct {
	Names []string
	Block bool
	OK    bool
}) {
	s = strings.TrimSpace(s)
	if s == "" {
		out.OK = true
		return out
	}
	m := syncNamesRE.FindStringSubmatch(s)
	if m == nil {
		return out
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return out
	}
	var names []string
	for _, item := range strings.Split(m[2], ",") {
		item = strings.TrimSpace(item)
		if len(item) < 2 || item[0] != '"' || item[len(item)-1] != '"' {
			return out
		}
		name := strings.ReplaceAll(item[1:len(item)-1], `""`, `"`)
		if name == NoSyncStandby {
			out.Block = true
			continue
		}
		if !ValidName(name) {
			return out
		}
		names = append(names, name)
	}
	if out.Block {
		out.OK = n == 1 && len(names) == 0
		return out
	}
	if n != len(names) || n == 0 {
		return out
	}
	out.Names, out.OK = names, true
	return out
}
