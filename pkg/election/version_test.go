package election

import "testing"

func TestServerVersionSafe(t *testing.T) {
	for v, want := range map[string]bool{
		"3.4.23": false, "3.4.30": false, "3.4.31": true, "3.4.40": true,
		"3.5.12": false, "3.5.13": true, "3.5.21": true, "3.6.0": true, "3.7.3": true,
		"3.3.27": false, "v3.5.13": true, "3.5.13-rc.1": true, "": false, "x.y.z": false, "3.5": false,
	} {
		if got, why := ServerVersionSafe(v); got != want {
			t.Errorf("%q: %v (%s); want %v", v, got, why, want)
		}
	}
}

// FuzzServerVersion: any version string is answered without a panic, and
// nothing below 3.4.31 passes.
func FuzzServerVersion(f *testing.F) {
	for _, s := range []string{"3.5.13", "3.4.30", "v3.6.0-alpha", "", "3..", "3.5.-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ok, why := ServerVersionSafe(v)
		if !ok && why == "" {
			t.Fatal("refused without a reason")
		}
		if ok && (v == "3.4.30" || v == "3.5.12") {
			t.Fatal("an unfixed version passed")
		}
	})
}
