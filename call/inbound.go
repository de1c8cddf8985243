package call

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"trunkgate/billing"
	"trunkgate/bridge"
	"trunkgate/internal/e164"
	"trunkgate/internal/textsafe"
	"trunkgate/keys"
	"trunkgate/media"
	"trunkgate/refusal"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// Incoming is a new inbound INVITE waiting for the edge's decision
// (*sip.Invite, through Invite).
type Incoming interface {
	// Context ends when the caller cancels or the transaction dies.
	Context() context.Context
	CallID() string
	CalledUser() string
	From() sip.Party
	To() sip.Party
	Source() netip.AddrPort
	Transport() string
	// PeerCertificates is the caller's TLS client certificate chain, leaf
	// first; nil without TLS or without a certificate.
	PeerCertificates() []*x509.Certificate
	// Header is the first value of an INVITE header, or "".
	Header(name string) string
	Received() time.Time
	Offer() (*sip.SDP, error)
	CheckDigest(realm, user, ha1 string) sip.DigestResult
	Challenge(realm string, stale bool) error
	Trying() error
	Refuse(r refusal.Reason) error
	// Drop leaves the INVITE without any answer.
	Drop()
	// Answer sends 200 OK with the SDP answer and waits for the ACK.
	Answer(sdp []byte, onReinvite sip.ReinviteFunc) (Dialog, error)
}

// HandleInvite runs an inbound call (sip.InviteHandler).
func (m *Manager) HandleInvite(inv *sip.Invite) { m.Inbound(Invite(inv)) }

// Inbound runs an inbound call from INVITE to answer, then hands it to its
// own goroutine until it ends.
//
// The answers before admission never tell a source which numbers exist
// (a scanner such as svwar lists every number that answers differently):
// a source no trunk allows gets one answer for every number (silence, or
// 403 with UnknownSourceReply); a source some trunk allows gets 404 for
// every number that is not on one of its own trunks, after the digest
// challenge if all the trunks that allow it want digest.
func (m *Manager) Inbound(inv Incoming) {
	src := inv.Source().Addr()
	allowing := m.cfg.Trunks.AllowingSource(src)
	called := inv.CalledUser()
	if len(allowing) == 0 {
		m.unknownSource(inv, called)
		return
	}
	trunk, ok := m.cfg.Trunks.ByNumber(called)
	if !ok || !trunk.AllowsSource(src) {
		if t, ok2 := m.cfg.Trunks.ByNumber(inv.To().User); ok2 && t.AllowsSource(src) {
			trunk, ok = t, true // some PBXs put the number in To only
		} else {
			ok = false
		}
	}
	if !ok {
		m.notOurs(inv, allowing, called)
		return
	}
	if trunk.WantsClientCert() && !trunk.ClientCertTrusted(inv.PeerCertificates()) {
		m.refuseInvite(inv, trunk.KeyID, refusal.ClientCertRequired, called)
		return
	}
	if trunk.DigestUser != "" {
		switch res := inv.CheckDigest(trunks.DigestRealm, trunk.DigestUser, trunk.DigestHA1); res {
		case sip.DigestMissing, sip.DigestStale:
			if err := inv.Challenge(trunks.DigestRealm, res == sip.DigestStale); err != nil {
				m.log.Debug("challenge not sent", "error", err)
			}
			m.refused(trunk.KeyID, refusal.DigestMissing, inv.Source().String(), inviteDetail(inv, called))
			return
		case sip.DigestWrong:
			m.refuseInvite(inv, trunk.KeyID, refusal.DigestWrong, called)
			return
		}
	}
	offer, err := inv.Offer()
	if err != nil {
		m.log.Info("INVITE refused: no usable SDP offer", "sip_call_id", inv.CallID(), "error", err)
		_ = inv.Refuse(refusal.NoCommonCodec)
		return
	}
	neg, err := sip.Policy{Encryption: sip.Encryption(trunk.MediaEncryption), Wideband: streamFormat(trunk).Wideband()}.Negotiate(offer)
	if err != nil {
		r := offerRefusal(err)
		m.log.Info("INVITE refused: offer not acceptable", "sip_call_id", inv.CallID(), "reason", r.Text())
		m.refuseInvite(inv, trunk.KeyID, r, called)
		return
	}
	if r := checkEncryption(trunk, inv.Transport(), neg); r != 0 {
		m.refuseInvite(inv, trunk.KeyID, r, called)
		return
	}
	callID := bridge.NewSid("CA")
	lease, err := m.cfg.Admitter.Admit(inv.Context(), keys.Request{CallID: callID, KeyID: trunk.KeyID, Direction: keys.Inbound,
		Destination: called})
	if err != nil {
		r, ok := refusal.As(err)
		if !ok {
			m.log.Error("admission failed", "key_id", trunk.KeyID, "error", err)
			r = refusal.Internal
		}
		m.refuseInvite(inv, trunk.KeyID, r, called)
		m.attempted(trunk.KeyID, keys.Inbound, called, r)
		return
	}
	m.attempted(trunk.KeyID, keys.Inbound, called, 0)
	_ = inv.Trying()
	m.inboundSetup(inv, trunk, callID, lease, neg)
}

// unknownSource answers an INVITE from a source no trunk allows: the
// same for every number, and nothing at all unless the operator asked for
// 403.
func (m *Manager) unknownSource(inv Incoming, called string) {
	if m.cfg.UnknownSourceReply {
		_ = inv.Refuse(refusal.SourceNotAllowed)
	} else {
		inv.Drop()
	}
	m.refused("", refusal.SourceNotAllowed, inv.Source().String(), inviteDetail(inv, called))
}

// notOurs answers a number that is not on a trunk of this source: 404,
// the same whether another key's trunk has it or none does. When every
// trunk that allows the source wants digest, the challenge comes first,
// as it would for a number that exists.
func (m *Manager) notOurs(inv Incoming, allowing []*trunks.Trunk, called string) {
	var challenged, wrong bool
	for _, t := range allowing {
		if t.DigestUser == "" {
			m.refuseInvite(inv, "", refusal.NoTrunk, called) // trusted by address alone
			return
		}
		switch inv.CheckDigest(trunks.DigestRealm, t.DigestUser, t.DigestHA1) {
		case sip.DigestOK:
			m.refuseInvite(inv, "", refusal.NoTrunk, called)
			return
		case sip.DigestMissing, sip.DigestStale:
			challenged = true
		case sip.DigestWrong:
			wrong = true
		}
	}
	if wrong {
		m.refuseInvite(inv, "", refusal.DigestWrong, called)
		return
	}
	if challenged {
		if err := inv.Challenge(trunks.DigestRealm, false); err != nil {
			m.log.Debug("challenge not sent", "error", err)
		}
		m.refused("", refusal.DigestMissing, inv.Source().String(), inviteDetail(inv, called))
	}
}

func inviteDetail(inv Incoming, called string) string {
	return fmt.Sprintf("number=%s sip_call_id=%s", called, inv.CallID())
}

func (m *Manager) refuseInvite(inv Incoming, keyID string, r refusal.Reason, called string) {
	if err := inv.Refuse(r); err != nil {
		m.log.Debug("refusal not sent", "error", err)
	}
	m.refused(keyID, r, inv.Source().String(), inviteDetail(inv, called))
}

// inboundSetup dials the application, opens media and answers. Whatever
// fails, the call was admitted: its lease is released and a CDR written.
func (m *Manager) inboundSetup(inv Incoming, trunk *trunks.Trunk, callID string, lease Lease, neg sip.Negotiated) {
	called, ok := trunks.NormaliseNumber(inv.CalledUser())
	if !ok {
		called = inv.CalledUser()
	}
	key := lease.Key()
	cdr := billing.CDR{
		CallID: callID, SIPCallID: inv.CallID(), KeyID: trunk.KeyID, TrunkID: trunk.ID,
		Direction: string(keys.Inbound), From: inv.From().User, To: called, TestKey: key.Mode == keys.Test,
		SetupMS: inv.Received().UnixMilli(), Codec: neg.Codec, Transport: inv.Transport(), MediaEncryption: protection(neg),
		RatePerMinute: lease.RatePerMinute(),
		RatePrefix:    lease.RatePrefix(), Country: e164.CountryCode(called),
	}
	c := m.newCall(keys.Inbound, lease, cdr)
	c.neg = neg
	c.log = c.log.With("sip_call_id", inv.CallID())
	defer c.recoverSetup()
	// The caller's CANCEL ends setup too.
	stopWatch := context.AfterFunc(inv.Context(), func() {
		if errors.Is(context.Cause(inv.Context()), sip.ErrCanceled) {
			c.cancel(refusal.Canceled)
		}
	})
	defer stopWatch()

	// failed refuses the INVITE (unless the caller canceled: sipgo has
	// answered 487) and ends the call unanswered.
	failed := func(r refusal.Reason) {
		if r != refusal.Canceled {
			_ = inv.Refuse(r)
			m.cfg.Metrics.Refused(trunk.KeyID, r)
		}
		c.fail(because(r))
	}
	stream, err := m.cfg.Apps.Dial(c.ctx, bridge.DialConfig{
		URL: trunk.AIURL, SigningSecret: key.SigningSecret, Timeout: m.cfg.DialTimeout, Log: c.log,
		Format: streamFormat(trunk), Options: m.streamOptions(bridge.Options{Extensions: trunk.ProtocolExtensions, ResumeGrace: time.Duration(trunk.ResumeGraceSeconds) * time.Second}),
		Start: bridge.Start{
			CallSid: c.id, AccountSid: bridge.AccountSid(trunk.KeyID), StreamSid: bridge.NewSid("MZ"),
			From: cdr.From, To: called, Direction: string(keys.Inbound), KeyID: trunk.KeyID, TrunkID: trunk.ID,
			Params: c.appParams(trunk, inv),
		},
	})
	if err != nil {
		if r, stopped := c.setupStopped(); stopped {
			failed(r)
			return
		}
		c.log.Warn("AI application unreachable", "url", trunk.AIURL, "error", err)
		failed(refusal.AppUnreachable)
		return
	}
	c.stream = stream
	srtp, err := srtpFor(neg)
	if err != nil {
		c.log.Error("SRTP setup failed", "error", err)
		failed(refusal.Internal)
		return
	}
	sess, err := m.cfg.Media.NewSession(media.Config{
		Codec: media.Codec{Name: neg.Codec, PayloadType: neg.PayloadType}, PtimeMS: neg.PtimeMS,
		DTMFPayloadType: neg.DTMFType, Remote: neg.Remote, RemoteRTCP: neg.RemoteRTCP,
		RTPTimeout: m.cfg.RTPTimeout, Listener: stream, Log: c.log, SRTP: srtp,
	})
	if err != nil {
		c.log.Error("no RTP ports", "error", err)
		failed(refusal.Overloaded)
		return
	}
	c.media = sess
	sess.SetDirection(direction(neg))
	answer := sip.BuildAnswer(sip.AnswerSpec{SessionID: c.sdpID, Version: 1, Addr: m.cfg.MediaIP, Port: sess.LocalPort(), Media: neg})
	if r, stopped := c.setupStopped(); stopped {
		failed(r)
		return
	}
	answeredAt := time.Now()
	dialog, err := inv.Answer(answer, c.reinvite)
	if err != nil {
		switch {
		case errors.Is(err, sip.ErrCanceled), errors.Is(context.Cause(inv.Context()), sip.ErrCanceled):
			c.fail(because(refusal.Canceled))
		case errors.Is(err, sip.ErrNoAck):
			o := because(refusal.NoAck)
			o.code = 200 // answered, never confirmed
			c.fail(o)
		default:
			c.log.Warn("answer failed", "error", err)
			c.fail(because(refusal.Internal))
		}
		return
	}
	c.dialog = dialog
	c.answered(answeredAt, answeredAt.Sub(inv.Received()))
}

// streamFormat is what an inbound trunk's app takes.
func streamFormat(trunk *trunks.Trunk) bridge.Format {
	return bridge.Format{Kind: trunk.Format, SampleRate: trunk.SampleRate}
}

// recoverSetup turns a panic during setup into the end of this call alone,
// with its CDR written and its channel freed.
func (c *Call) recoverSetup() {
	if v := recover(); v != nil {
		c.log.Error("panic in call setup; ending the call", "panic", fmt.Sprint(v))
		c.fail(because(refusal.Internal))
	}
}

func direction(n sip.Negotiated) media.Direction {
	d := media.SendRecv
	switch n.Direction {
	case "sendonly":
		d = media.SendOnly
	case "recvonly":
		d = media.RecvOnly
	case "inactive":
		d = media.Inactive
	}
	// RFC 2543 hold: c=0.0.0.0 means "do not send to me".
	if n.Remote.IsValid() && n.Remote.Addr().IsUnspecified() {
		switch d {
		case media.SendRecv:
			d = media.RecvOnly
		case media.SendOnly:
			d = media.Inactive
		}
	}
	return d
}

// reinvite answers an in-dialog offer: hold, unhold, a new address, or a
// session refresh. The codec stays the one negotiated at setup.
func (c *Call) reinvite(offer *sip.SDP) ([]byte, error) {
	neg, err := sip.NegotiateKeeping(offer, c.neg)
	if err != nil {
		return nil, err
	}
	c.media.SetRemote(neg.Remote, neg.RemoteRTCP)
	c.media.SetPayloadTypes(neg.PayloadType, neg.DTMFType)
	dir := direction(neg)
	c.media.SetDirection(dir)
	// The packetisation we send stays the one set up: ptime is advice
	// (RFC 4566), and the playout clock keeps its schedule.
	neg.PtimeMS = c.neg.PtimeMS
	c.mu.Lock()
	c.sdpVersion++
	version := c.sdpVersion
	held := dir == media.RecvOnly || dir == media.Inactive
	var tell Stream
	if held != c.held && c.stream != nil {
		c.held, tell = held, c.stream
	}
	c.mu.Unlock()
	if tell != nil {
		tell.Hold(held)
	}
	return sip.BuildAnswer(sip.AnswerSpec{SessionID: c.sdpID, Version: version, Addr: c.m.cfg.MediaIP,
		Port: c.media.LocalPort(), Media: neg}), nil
}

// appParams are what the app gets in start.customParameters beside the
// edge's own: the trunk's parameters and the INVITE headers the trunk
// passes (sip_headers), under their names. A header the INVITE lacks is
// left out, and so is a value longer than trunks.MaxPassedHeaderValue or
// with control characters (logged: the carrier sent something odd).
func (c *Call) appParams(trunk *trunks.Trunk, inv Incoming) map[string]string {
	if len(trunk.SIPHeaders) == 0 {
		return trunk.Params
	}
	p := make(map[string]string, len(trunk.Params)+len(trunk.SIPHeaders))
	maps.Copy(p, trunk.Params)
	for _, name := range trunk.SIPHeaders {
		switch v := inv.Header(name); {
		case v == "":
		case len(v) > trunks.MaxPassedHeaderValue || textsafe.HasControl(v):
			c.log.Warn("INVITE header not passed to the app: too long or with control characters", "header", name, "bytes", len(v))
		default:
			p[name] = v
		}
	}
	return p
}
