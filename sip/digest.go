package sip

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"trunkgate/refusal"
)

// DigestResult is what an INVITE's digest credentials amount to.
type DigestResult int

const (
	DigestOK      DigestResult = iota
	DigestMissing              // no credentials for this realm: challenge
	DigestStale                // right password, expired nonce: challenge again, stale=true
	DigestWrong                // wrong user, password or nonce: 403
)

// nonceTTL is how long a challenge may be answered. A carrier re-sends the
// INVITE with credentials within milliseconds; minutes cover slow PBXs.
const nonceTTL = 5 * time.Minute

// nonces makes and checks stateless nonces: the issue time and an HMAC of
// it and the Call-ID, under a key that lives as long as the process, or
// one that edges sharing a database share (Config.NonceKey), so that a
// challenge one edge issued is answered to another. A
// nonce is good only for the call it was issued to, so a captured
// Authorization header cannot start another call.
type nonces struct {
	key [32]byte
	now func() time.Time
}

func newNonces(key []byte) *nonces {
	n := &nonces{now: time.Now}
	if len(key) == 0 {
		rand.Read(n.key[:])
	} else {
		n.key = sha256.Sum256(key)
	}
	return n
}

func (n *nonces) mac(issued uint64, callID string) []byte {
	m := hmac.New(sha256.New, n.key[:])
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], issued)
	m.Write(ts[:])
	m.Write([]byte(callID))
	return m.Sum(nil)[:16]
}

func (n *nonces) issue(callID string) string {
	issued := uint64(n.now().Unix())
	return fmt.Sprintf("%016x%x", issued, n.mac(issued, callID))
}

// check reports whether nonce was issued by us for callID, and whether it
// is still fresh.
func (n *nonces) check(nonce, callID string) (ours, fresh bool) {
	if len(nonce) != 48 {
		return false, false
	}
	raw, err := hex.DecodeString(nonce)
	if err != nil {
		return false, false
	}
	issued := binary.BigEndian.Uint64(raw[:8])
	if !hmac.Equal(raw[8:], n.mac(issued, callID)) {
		return false, false
	}
	age := n.now().Sub(time.Unix(int64(issued), 0))
	return true, age >= -time.Minute && age <= nonceTTL
}

// CheckDigest checks the INVITE's Authorization (or Proxy-Authorization)
// against a user and HA1 in realm. MD5 with qop=auth or without qop
// (RFC 2617, as SIP carriers use it).
func (inv *Invite) CheckDigest(realm, user, ha1 string) DigestResult {
	creds := inv.credentials(realm)
	if creds == nil {
		return DigestMissing
	}
	if creds.Username != user || creds.URI == "" || creds.Userhash ||
		(creds.Algorithm != "" && !strings.EqualFold(creds.Algorithm, "MD5")) {
		return DigestWrong
	}
	ours, fresh := inv.srv.nonces.check(creds.Nonce, inv.CallID())
	if !ours {
		return DigestWrong
	}
	want, ok := digestResponse(ha1, "INVITE", creds)
	if !ok || subtle.ConstantTimeCompare([]byte(strings.ToLower(creds.Response)), []byte(want)) != 1 {
		return DigestWrong
	}
	if !fresh {
		return DigestStale
	}
	return DigestOK
}

// credentials returns the digest credentials for realm, nil if none.
func (inv *Invite) credentials(realm string) *digest.Credentials {
	for _, name := range []string{"Authorization", "Proxy-Authorization"} {
		for _, h := range inv.req.GetHeaders(name) {
			c, err := digest.ParseCredentials(h.Value())
			if err == nil && c.Realm == realm {
				return c
			}
		}
	}
	return nil
}

// Challenge answers 401 with a fresh nonce for realm (RFC 3261 §22.4);
// the carrier re-sends the INVITE with credentials.
func (inv *Invite) Challenge(realm string, stale bool) error {
	chal := digest.Challenge{Realm: realm, Nonce: inv.srv.nonces.issue(inv.CallID()), Algorithm: "MD5", QOP: []string{"auth"}, Stale: stale}
	r := refusal.DigestMissing
	code, phrase := r.SIP()
	return inv.Reject(code, phrase, r.ReasonHeader(), gosip.NewHeader("WWW-Authenticate", chal.String()))
}

// digestResponse is the response a client knowing ha1 would send
// (RFC 2617 §3.2.2.1); false for a qop we do not offer.
func digestResponse(ha1, method string, c *digest.Credentials) (string, bool) {
	ha2 := md5hex(method + ":" + c.URI)
	switch c.QOP {
	case "":
		return md5hex(ha1 + ":" + c.Nonce + ":" + ha2), true
	case "auth":
		return md5hex(fmt.Sprintf("%s:%s:%08x:%s:auth:%s", ha1, c.Nonce, c.Nc, c.Cnonce, ha2)), true
	}
	return "", false
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
