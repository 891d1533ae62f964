package checker

import (
	"io/fs"
	"os"
	"path/filepath"
)

// PruneToLogs removes what a finished run left under root except its logs
// and configuration: postgres and etcd data directories ("data") and the
// copied binaries ("bin"). A failed run keeps its files so the failure can
// be explained, but its data directories hold gigabytes of WAL (about
// 1.5 GB per member after a few hundred rounds), and the kept runs of a
// few soaks filled a 90 GB disk and stopped the next soak mid-run. The
// seed replays the run; the logs explain it. It returns the bytes removed.
func PruneToLogs(root string) (int64, error) {
	var freed int64
	var prune []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "data" || d.Name() == "bin") {
			prune = append(prune, path)
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, p := range prune {
		freed += du(p)
		if err := os.RemoveAll(p); err != nil {
			return freed, err
		}
	}
	return freed, nil
}

func du(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
