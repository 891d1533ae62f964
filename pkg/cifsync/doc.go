// Package cifsync keeps the CIF front-end's ~/.cif pointing at the current
// primary: it edits the `host` value of the `[db]` section and nothing else
// (comments, spacing, order, line endings, other sections stay
// byte-for-byte), writes the file safely (temporary file, same mode and
// owner, fsync, rename, fsync of the directory, a backup of the previous
// version), and follows the leader key in etcd, confirming each new
// leader with its agent's GET /primary before rewriting.
package cifsync
