package call

import (
	"context"
	"crypto/tls"
	"net/http"

	"trunkgate/bridge"
	"trunkgate/keys"
	"trunkgate/media"
	"trunkgate/sip"
	"trunkgate/trunks"
)

// The concrete parts return concrete types; these adapters present them
// as the interfaces call drives, so that tests can put fakes in their place.

// Admission adapts keys.Admitter to Admitter.
func Admission(a *keys.Admitter) Admitter { return admission{a} }

type admission struct{ a *keys.Admitter }

func (x admission) Admit(ctx context.Context, req keys.Request) (Lease, error) {
	l, err := x.a.Admit(ctx, req)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Ports adapts media.PortPool to MediaFactory.
func Ports(p *media.PortPool) MediaFactory { return ports{p} }

type ports struct{ p *media.PortPool }

func (x ports) NewSession(cfg media.Config) (Media, error) {
	s, err := x.p.NewSession(cfg)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Apps dials applications with bridge.Dial, verifying wss:// servers
// against the system's roots.
var Apps AppDialer = apps{}

// AppsOver dials applications with bridge.Dial, verifying wss:// servers
// with tlsConfig (a configured CA bundle).
func AppsOver(tlsConfig *tls.Config) AppDialer {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig
	return apps{hc: &http.Client{Transport: tr}}
}

type apps struct{ hc *http.Client }

func (a apps) Dial(ctx context.Context, cfg bridge.DialConfig) (Stream, error) {
	cfg.HTTPClient = a.hc
	s, err := bridge.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Invite adapts an incoming *sip.Invite to Incoming.
func Invite(inv *sip.Invite) Incoming { return invite{inv} }

type invite struct{ *sip.Invite }

func (x invite) Answer(sdp []byte, onReinvite sip.ReinviteFunc) (Dialog, error) {
	d, err := x.Invite.Answer(sdp, onReinvite)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Carriers adapts the SIP user agent to Carrier.
func Carriers(s *sip.Server) Carrier { return carriers{s} }

type carriers struct{ s *sip.Server }

func (x carriers) Dial(ctx context.Context, req sip.DialRequest) (Dialog, []byte, error) {
	d, answer, err := x.s.Dial(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	return d, answer, nil
}

// Pinger adapts the SIP user agent to trunks.Pinger (OPTIONS).
func Pinger(s *sip.Server) trunks.Pinger { return pinger{s} }

type pinger struct{ s *sip.Server }

func (x pinger) Ping(ctx context.Context, g trunks.Gateway) (int, error) {
	return x.s.Ping(ctx, sip.Target{Host: g.Host, Port: g.Port, Transport: g.Transport})
}

var (
	_ Lease  = (*keys.Lease)(nil)
	_ Media  = (*media.Session)(nil)
	_ Stream = (*bridge.Stream)(nil)
	_ Dialog = (*sip.Dialog)(nil)
)
