package pgctl

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// PasswordVerifier returns what PostgreSQL stores for a role's password, so
// that `ALTER ROLE ... PASSWORD '<verifier>'` never sends the password
// itself (it would be visible in pg_stat_activity, pg_stat_statements and
// statement logs). 10+: SCRAM-SHA-256; before: md5. ok is false when the
// password is not plain ASCII: PostgreSQL applies SASLprep to those and
// cifha does not reimplement it, so the caller must fall back.
func PasswordVerifier(v Version, role, password string) (verifier string, ok bool, err error) {
	for i := 0; i < len(password); i++ {
		if password[i] < 0x20 || password[i] > 0x7e {
			return "", false, nil
		}
	}
	if v < 100000 {
		sum := md5.Sum([]byte(password + role))
		return "md5" + hex.EncodeToString(sum[:]), true, nil
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", false, err
	}
	return scramVerifier(password, salt, 4096)
}

func scramVerifier(password string, salt []byte, iter int) (string, bool, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return "", false, fmt.Errorf("scram: %w", err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(server)), true, nil
}
