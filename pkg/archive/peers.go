package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Peers mode: segments travel over the agents' authenticated API,
// PUT and GET <api>/archive/<name> (the agent stores them in its own
// archive directory with StoreFrom). The HTTP client carries the token.

// Push sends the file at src to the peer whose API is at base. A peer
// that already holds identical content answers success; different content
// is ErrConflict.
func Push(ctx context.Context, hc *http.Client, base, src, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, endpoint(base, name), f)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	req.ContentLength = fi.Size()
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("push %s to %s: %w", name, base, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("push %s to %s: %w", name, base, ErrConflict)
	}
	return fmt.Errorf("push %s to %s: %s: %s", name, base, resp.Status, strings.TrimSpace(string(msg)))
}

// Pull copies name from the peer at base to dst (through a temporary
// file beside it, renamed into place). A peer without it: ErrNotFound.
func Pull(ctx context.Context, hc *http.Client, base, name, dst string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint(base, name), nil)
	if err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("pull %s from %s: %w", name, base, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s at %s: %w", name, base, ErrNotFound)
	case resp.StatusCode != http.StatusOK:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("pull %s from %s: %s: %s", name, base, resp.Status, strings.TrimSpace(string(msg)))
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".cifha-restore-")
	if err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	n, err := copyFn(tmp, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("short body: %d of %d bytes", n, resp.ContentLength)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pull %s from %s: %w", name, base, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	return nil
}

func endpoint(base, name string) string {
	return strings.TrimRight(base, "/") + "/archive/" + url.PathEscape(name)
}

// Handler serves PUT and GET /archive/<name> from dir for the agent's
// API; authorized decides who may (the control credentials: WAL holds
// every row). maxSize bounds a segment (WAL segments are at most 1 GiB).
func Handler(dir string, maxSize int64, authorized func(*http.Request) bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cifha"`)
			http.Error(w, "missing or wrong token", http.StatusUnauthorized)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/archive/")
		if err := ValidName(name); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch r.Method {
		case http.MethodPut:
			if r.ContentLength > maxSize {
				http.Error(w, "segment too large", http.StatusRequestEntityTooLarge)
				return
			}
			err := StoreFrom(dir, name, http.MaxBytesReader(w, r.Body, maxSize))
			switch {
			case err == nil:
				w.WriteHeader(http.StatusCreated)
			case errors.Is(err, ErrConflict):
				http.Error(w, err.Error(), http.StatusConflict)
			default:
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		case http.MethodGet:
			f, err := os.Open(filepath.Join(dir, name))
			if errors.Is(err, os.ErrNotExist) {
				http.Error(w, "not in the archive", http.StatusNotFound)
				return
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer f.Close()
			if fi, err := f.Stat(); err == nil {
				w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			io.Copy(w, f)
		default:
			w.Header().Set("Allow", "GET, PUT")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	}
}
