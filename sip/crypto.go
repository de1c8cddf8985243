package sip

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SDES crypto suites (RFC 4568, RFC 7714) the edge speaks, strongest
// first.
const (
	SuiteAEADAES128GCM       = "AEAD_AES_128_GCM"
	SuiteAESCM128HMACSHA1_80 = "AES_CM_128_HMAC_SHA1_80"
	SuiteAESCM128HMACSHA1_32 = "AES_CM_128_HMAC_SHA1_32"
)

// suites are each suite's master key and salt lengths (bytes) and the
// edge's preference among them (0 best).
var suites = map[string]struct{ keyLen, saltLen, rank int }{
	SuiteAEADAES128GCM:       {16, 12, 0},
	SuiteAESCM128HMACSHA1_80: {16, 14, 1},
	SuiteAESCM128HMACSHA1_32: {16, 14, 2},
}

// Crypto is one SDES a=crypto attribute: a suite and the sender's master
// key and salt. Its String is the attribute's value; it must never be
// logged (it carries a key).
type Crypto struct {
	Tag   int
	Suite string
	Key   []byte // master key, then master salt
}

// ErrBadCrypto is an a=crypto attribute the edge cannot use.
var ErrBadCrypto = errors.New("bad a=crypto")

// ParseCrypto reads an a=crypto value: "1 AES_CM_128_HMAC_SHA1_80
// inline:<base64 key||salt>[|lifetime][|MKI:len]". A lifetime is
// accepted and ignored (calls are far shorter than 2^31 packets); an MKI,
// several keys and session parameters are refused, as most SBCs do.
func ParseCrypto(value string) (Crypto, error) {
	fields := strings.Fields(value)
	if len(fields) < 3 {
		return Crypto{}, fmt.Errorf("%w: want tag, suite and key", ErrBadCrypto)
	}
	if len(fields) > 3 {
		return Crypto{}, fmt.Errorf("%w: session parameters are not supported", ErrBadCrypto)
	}
	tag, err := strconv.Atoi(fields[0])
	if err != nil || tag < 0 || tag > 999999999 {
		return Crypto{}, fmt.Errorf("%w: tag %q", ErrBadCrypto, fields[0])
	}
	suite, ok := suites[fields[1]]
	if !ok {
		return Crypto{}, fmt.Errorf("%w: suite %q", ErrBadCrypto, fields[1])
	}
	method, params, ok := strings.Cut(fields[2], ":")
	if !ok || method != "inline" || strings.Contains(params, ";") {
		return Crypto{}, fmt.Errorf("%w: want one inline key", ErrBadCrypto)
	}
	keyText, rest, _ := strings.Cut(params, "|")
	for part := range strings.SplitSeq(rest, "|") {
		if strings.Contains(part, ":") {
			return Crypto{}, fmt.Errorf("%w: MKI is not supported", ErrBadCrypto)
		}
	}
	key, err := base64.StdEncoding.DecodeString(keyText)
	if err != nil {
		// Some senders leave out the padding.
		if key, err = base64.RawStdEncoding.DecodeString(keyText); err != nil {
			return Crypto{}, fmt.Errorf("%w: key is not base64", ErrBadCrypto)
		}
	}
	if len(key) != suite.keyLen+suite.saltLen {
		return Crypto{}, fmt.Errorf("%w: %s wants a %d-byte key and salt, not %d", ErrBadCrypto, fields[1],
			suite.keyLen+suite.saltLen, len(key))
	}
	return Crypto{Tag: tag, Suite: fields[1], Key: key}, nil
}

// Attribute is the a=crypto attribute's value, key included: for SDP
// only.
func (c Crypto) Attribute() string {
	return fmt.Sprintf("%d %s inline:%s", c.Tag, c.Suite, base64.StdEncoding.EncodeToString(c.Key))
}

// String names the tag and suite and leaves the key out, so that a Crypto
// printed by mistake (in a log line, an error, a %v of a struct holding
// one) shows no key material.
func (c Crypto) String() string { return fmt.Sprintf("%d %s inline:[redacted]", c.Tag, c.Suite) }

// GoString keeps %#v from printing the key too.
func (c Crypto) GoString() string { return "sip.Crypto{" + c.String() + "}" }

// NewCrypto makes a fresh master key and salt for suite from crypto/rand.
func NewCrypto(tag int, suite string) (Crypto, error) {
	s, ok := suites[suite]
	if !ok {
		return Crypto{}, fmt.Errorf("%w: suite %q", ErrBadCrypto, suite)
	}
	key := make([]byte, s.keyLen+s.saltLen)
	if _, err := rand.Read(key); err != nil {
		return Crypto{}, err
	}
	return Crypto{Tag: tag, Suite: suite, Key: key}, nil
}

// MasterKey and MasterSalt split the key as the suite says.
func (c Crypto) MasterKey() []byte  { return c.Key[:suites[c.Suite].keyLen] }
func (c Crypto) MasterSalt() []byte { return c.Key[suites[c.Suite].keyLen:] }

// OfferCrypto makes a fresh key for every suite the edge speaks,
// strongest first, tagged from 1: the a=crypto lines of an SRTP offer.
func OfferCrypto() ([]Crypto, error) {
	out := make([]Crypto, len(suites))
	for name, s := range suites {
		c, err := NewCrypto(s.rank+1, name)
		if err != nil {
			return nil, err
		}
		out[s.rank] = c
	}
	return out, nil
}

// ChooseCrypto picks the offer's attribute the edge prefers (the
// strongest suite, then the lowest tag); false when none is usable.
func ChooseCrypto(offered []Crypto) (Crypto, bool) {
	best, found := Crypto{}, false
	for _, c := range offered {
		r, bestRank := suites[c.Suite].rank, suites[best.Suite].rank
		if !found || r < bestRank || (r == bestRank && c.Tag < best.Tag) {
			best, found = c, true
		}
	}
	return best, found
}
