package call

import (
	"errors"
	"fmt"
	"strings"

	"trunkgate/media"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// What protected a call's carrier leg, as CDRs, calls list, metrics and
// start.customParameters name it.
const (
	mediaSRTP  = "srtp"
	mediaClear = "none"
)

// protection names the media encryption of a negotiated call.
func protection(n sip.Negotiated) string {
	if n.Secure() {
		return mediaSRTP
	}
	return mediaClear
}

// offerRefusal is the refusal for an SDP offer (or answer) the edge
// cannot take.
func offerRefusal(err error) refusal.Reason {
	switch {
	case errors.Is(err, sip.ErrSRTPRequired):
		return refusal.SRTPRequired
	case errors.Is(err, sip.ErrSRTPOff):
		return refusal.SRTPOff
	}
	return refusal.NoCommonCodec
}

// checkEncryption holds an inbound call's negotiated media against its
// trunk: SDES keys of a trunk that requires SRTP must have come over TLS,
// or anyone on the path has read them.
func checkEncryption(trunk *trunks.Trunk, transport string, n sip.Negotiated) refusal.Reason {
	if n.Secure() && trunk.MediaEncryption == trunks.MediaRequire && !strings.EqualFold(transport, "TLS") {
		return refusal.SDESOverPlain
	}
	return 0
}

// srtpFor is the SRTP context of a negotiated call; nil for plain RTP.
func srtpFor(n sip.Negotiated) (*media.SRTP, error) {
	if !n.Secure() {
		return nil, nil
	}
	s, err := media.NewSRTP(n.LocalCrypto.Suite, n.LocalCrypto.MasterKey(), n.LocalCrypto.MasterSalt(),
		n.RemoteCrypto.MasterKey(), n.RemoteCrypto.MasterSalt())
	if err != nil {
		return nil, fmt.Errorf("SRTP %s: %w", n.LocalCrypto.Suite, err)
	}
	return s, nil
}

// offerKeys are the SDES keys of an outbound SRTP offer, one per suite
// the edge speaks; none unless the trunk requires SRTP (an RTP/SAVP offer
// is refused by a carrier that does not do SRTP, so "allow" offers plain
// RTP).
func offerKeys(trunk *trunks.Trunk) ([]sip.Crypto, error) {
	if trunk.MediaEncryption != trunks.MediaRequire {
		return nil, nil
	}
	return sip.OfferCrypto()
}
