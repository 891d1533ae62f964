package state

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Values that enter from etcd or a configuration file and end up in
// postgres' configuration files, in a libpq connection string or in a URL
// are checked here, where they are parsed: a hostile value (a newline, a
// quote, a space) is refused before it can add a line or a keyword.

// SlotName is the replication slot of member name. Two member names that
// map to the same slot cannot both be members (ParseCluster ignores the
// second one).
func SlotName(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "-", "_")
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)
var ipv6RE = regexp.MustCompile(`^[0-9A-Fa-f:.]+$`)

// ValidConnAddress checks a "host:port" (or "[ipv6]:port") postgres
// address: a hostname or IP address, and a port from 1 to 65535.
func ValidConnAddress(addr string) error {
	host, port, ok := splitHostPort(addr)
	if !ok {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if !hostnameRE.MatchString(host) && !(strings.Contains(host, ":") && ipv6RE.MatchString(host)) {
		return fmt.Errorf("%q: %q is not a host name or IP address", addr, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: %q is not a port", addr, port)
	}
	return nil
}

// splitHostPort splits "host:port" and "[v6]:port" (no I/O package: this
// one is pure).
func splitHostPort(addr string) (host, port string, ok bool) {
	if strings.HasPrefix(addr, "[") {
		end := strings.Index(addr, "]:")
		if end < 0 {
			return "", "", false
		}
		return addr[1:end], addr[end+2:], true
	}
	i := strings.LastIndexByte(addr, ':')
	if i <= 0 || strings.Contains(addr[:i], ":") {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}

// ValidAPIURL checks an agent's API base URL: http or https, a host, and
// no whitespace or control characters.
func ValidAPIURL(u string) error {
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		rest, ok = strings.CutPrefix(u, "https://")
	}
	if !ok || rest == "" || strings.HasPrefix(rest, "/") {
		return fmt.Errorf("%q is not an http(s) URL", u)
	}
	if err := Printable(u); err != nil || strings.ContainsAny(u, " \"'<>\\") {
		return fmt.Errorf("%q contains characters a URL may not", u)
	}
	return nil
}

// Printable refuses control characters (a newline would add a line to a
// configuration file) and invalid UTF-8.
func Printable(s string) error {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return fmt.Errorf("contains a control character or invalid UTF-8 (%q)", r)
		}
	}
	return nil
}
