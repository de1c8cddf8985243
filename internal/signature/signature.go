// Package signature signs what the edge sends to a key's own services
// (the AI application's WebSocket handshake, alert webhooks) so that they
// can tell it came from the edge: hex HMAC-SHA256, keyed with the key's
// signing secret, over the parts joined by newlines.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// Sign is the signature of parts under secret.
func Sign(secret string, parts ...[]byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	for i, p := range parts {
		if i > 0 {
			mac.Write([]byte{'\n'})
		}
		mac.Write(p)
	}
	return hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a signature in constant time (the receiver's side).
func Verify(secret, sig string, parts ...[]byte) bool {
	return hmac.Equal([]byte(Sign(secret, parts...)), []byte(sig))
}
