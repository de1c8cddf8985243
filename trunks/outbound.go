package trunks

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Trunk directions.
const (
	Inbound  = "inbound"  // carriers call the trunk's numbers
	Outbound = "outbound" // the key's applications call out through its gateways
)

// Gateway is one carrier SIP server of an outbound trunk. Gateways are
// tried by priority (lowest first), weighted at equal priority.
type Gateway struct {
	// URI is the gateway as the operator gave it, normalised:
	// "sip:host:port;transport=udp".
	URI       string `json:"uri"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
	Transport string `json:"transport"` // "udp", "tcp" or "tls"
	Priority  int    `json:"priority"`
	Weight    int    `json:"weight"`
}

// Addr is host:port.
func (g Gateway) Addr() string { return net.JoinHostPort(g.Host, strconv.Itoa(g.Port)) }

// Limits of an outbound trunk's settings.
const (
	maxGateways    = 16
	maxHeaders     = 16
	maxHeaderValue = 256
	maxRingTimeout = 300 * time.Second
)

// ParseGateway reads a gateway in the CLI's form,
// "sip:host[:port][;transport=udp|tcp|tls][;priority=N][;weight=N]". Priority
// defaults to 1 and weight to 10; the port to 5060, 5061 over TLS.
func ParseGateway(s string) (Gateway, error) {
	g := Gateway{Priority: 1, Weight: 10, Transport: "udp"}
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "sip:")
	secure := false
	if !ok {
		// sips: is TLS to the gateway (RFC 3261 §19.1.1).
		rest, secure = strings.CutPrefix(strings.TrimSpace(s), "sips:")
		ok = secure
		g.Transport = "tls"
	}
	if !ok {
		return g, fmt.Errorf("%w: gateway %q: want sip:host[:port][;transport=udp|tcp|tls][;priority=N][;weight=N]", ErrInvalid, s)
	}
	hostport, params, _ := strings.Cut(rest, ";")
	if strings.Contains(hostport, "@") {
		return g, fmt.Errorf("%w: gateway %q: no user part; the dialled number goes there", ErrInvalid, s)
	}
	g.Host, g.Port = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), 0
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		port, err := strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return g, fmt.Errorf("%w: gateway %q: bad port", ErrInvalid, s)
		}
		g.Host, g.Port = h, port
	}
	if !validHost(g.Host) {
		return g, fmt.Errorf("%w: gateway %q: the host must be an IP address or a DNS name", ErrInvalid, s)
	}
	for _, p := range strings.Split(params, ";") {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToLower(k) {
		case "transport":
			if secure && !strings.EqualFold(v, "tls") {
				return g, fmt.Errorf("%w: gateway %q: a sips: URI is TLS", ErrInvalid, s)
			}
			g.Transport = strings.ToLower(v)
		case "priority", "weight":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1000 {
				return g, fmt.Errorf("%w: gateway %q: %s must be 0 to 1000", ErrInvalid, s, k)
			}
			if k == "priority" {
				g.Priority = n
			} else {
				g.Weight = n
			}
		default:
			return g, fmt.Errorf("%w: gateway %q: unknown parameter %q", ErrInvalid, s, k)
		}
	}
	return g.normalise(s)
}

// hostname is a DNS name: dot-separated labels of letters, digits and
// inner hyphens.
var hostname = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return !strings.Contains(h, "%") // no IPv6 zones
	}
	return len(h) <= 253 && hostname.MatchString(h)
}

func (g Gateway) normalise(orig string) (Gateway, error) {
	switch g.Transport {
	case "", "udp":
		g.Transport = "udp"
	case "tcp", "tls":
	default:
		return g, fmt.Errorf("%w: gateway %q: transport must be udp, tcp or tls", ErrInvalid, orig)
	}
	if g.Port == 0 {
		g.Port = 5060
		if g.Transport == "tls" {
			g.Port = 5061
		}
	}
	if g.Priority < 0 || g.Priority > 1000 || g.Weight < 0 || g.Weight > 1000 {
		return g, fmt.Errorf("%w: gateway %q: priority and weight must be 0 to 1000", ErrInvalid, orig)
	}
	host := g.Host
	if a, err := netip.ParseAddr(host); err == nil {
		if a.IsUnspecified() || a.IsMulticast() {
			return g, fmt.Errorf("%w: gateway %q: not a host's address", ErrInvalid, orig)
		}
		g.Host, host = a.String(), a.String()
		if a.Is6() {
			host = "[" + host + "]"
		}
	}
	g.URI = "sip:" + host + ":" + strconv.Itoa(g.Port) + ";transport=" + g.Transport
	return g, nil
}

// GatewaySpec is a gateway as REST takes it: a URI and, optionally, its
// priority and weight (they may also be parameters of the URI).
type GatewaySpec struct {
	URI      string `json:"uri"`
	Priority *int   `json:"priority"`
	Weight   *int   `json:"weight"`
}

func (gs GatewaySpec) build() (Gateway, error) {
	g, err := ParseGateway(gs.URI)
	if err != nil {
		return g, err
	}
	if gs.Priority != nil {
		g.Priority = *gs.Priority
	}
	if gs.Weight != nil {
		g.Weight = *gs.Weight
	}
	return g.normalise(gs.URI)
}

// reservedHeaders may not be set by a trunk's custom headers: the edge
// writes them itself, and a copy would break the dialog or the body.
var reservedHeaders = map[string]bool{
	"via": true, "from": true, "to": true, "call-id": true, "cseq": true, "contact": true, "max-forwards": true,
	"route": true, "record-route": true, "content-length": true, "content-type": true, "authorization": true,
	"proxy-authorization": true, "www-authenticate": true, "proxy-authenticate": true, "allow": true,
	"supported": true, "require": true, "user-agent": true, "expires": true,
}

// ValidHeader checks a custom SIP header an outbound INVITE will carry:
// a token name that the edge does not set itself, and a value without
// CR, LF or other control characters (header injection).
func ValidHeader(name, value string) error {
	if name == "" || len(name) > 64 || strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.!%*_+`'~", r))
	}) >= 0 {
		return fmt.Errorf("%w: header name %q: want a SIP token (letters, digits, -.!%%*_+`'~)", ErrInvalid, name)
	}
	if reservedHeaders[strings.ToLower(name)] {
		return fmt.Errorf("%w: header %s is set by the edge", ErrInvalid, name)
	}
	if len(value) > maxHeaderValue || strings.IndexFunc(value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) >= 0 {
		return fmt.Errorf("%w: header %s: value must be at most %d bytes without control characters", ErrInvalid, name, maxHeaderValue)
	}
	return nil
}

// buildOutbound validates the outbound half of a spec.
func (s Spec) buildOutbound(t *Trunk) error {
	if len(s.Numbers) > 0 || s.AIURL != "" || len(s.AllowedSources) > 0 || s.DigestUsername != "" || s.DigestPassword != "" {
		return fmt.Errorf("%w: numbers, ai_url, allowed_sources and digest credentials are for inbound trunks", ErrInvalid)
	}
	if len(s.Gateways) == 0 || len(s.Gateways) > maxGateways {
		return fmt.Errorf("%w: an outbound trunk needs 1 to %d gateways", ErrInvalid, maxGateways)
	}
	seen := map[string]bool{}
	for _, gs := range s.Gateways {
		g, err := gs.build()
		if err != nil {
			return err
		}
		if seen[g.URI] {
			return fmt.Errorf("%w: gateway %s listed twice", ErrInvalid, g.URI)
		}
		seen[g.URI] = true
		t.Gateways = append(t.Gateways, g)
	}
	if (s.AuthUsername == "") != (s.AuthPassword == "") {
		return fmt.Errorf("%w: auth_username and auth_password go together", ErrInvalid)
	}
	for _, v := range []string{s.AuthUsername, s.AuthPassword} {
		if len(v) > 128 || strings.IndexFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f || r == '"' || r == '\\' }) >= 0 {
			return fmt.Errorf("%w: auth_username and auth_password must be at most 128 printable characters, without quotes or backslashes", ErrInvalid)
		}
	}
	t.AuthUser, t.AuthPassword = s.AuthUsername, s.AuthPassword
	if s.CallerID != "" {
		n, ok := NormaliseNumber(s.CallerID)
		if !ok {
			return fmt.Errorf("%w: caller_id %q is not an E.164 number", ErrInvalid, s.CallerID)
		}
		t.CallerID = n
	}
	if s.MaxChannels < 0 || s.MaxChannels > 100000 {
		return fmt.Errorf("%w: max_channels must be 0 (none) to 100000", ErrInvalid)
	}
	t.MaxChannels = s.MaxChannels
	if s.RingTimeoutSeconds < 0 || time.Duration(s.RingTimeoutSeconds)*time.Second > maxRingTimeout {
		return fmt.Errorf("%w: ring_timeout_seconds must be 0 (the edge's default) to %v", ErrInvalid, maxRingTimeout.Seconds())
	}
	t.RingTimeoutSeconds = s.RingTimeoutSeconds
	if len(s.Headers) > maxHeaders {
		return fmt.Errorf("%w: at most %d headers", ErrInvalid, maxHeaders)
	}
	t.Headers = map[string]string{}
	for k, v := range s.Headers {
		if err := ValidHeader(k, v); err != nil {
			return err
		}
		t.Headers[k] = v
	}
	t.Format, t.SampleRate, t.Params = FormatTwilio, 8000, map[string]string{}
	return nil
}

// RingTimeout is how long the callee may ring before the edge gives up:
// the trunk's own, else def (the edge's --ring-timeout).
func (t *Trunk) RingTimeout(def time.Duration) time.Duration {
	if t.RingTimeoutSeconds > 0 {
		return time.Duration(t.RingTimeoutSeconds) * time.Second
	}
	return def
}

// Order lists gateways in the order to try them: by priority, lowest
// first; at equal priority, a weighted random order (a gateway of weight
// 20 comes first twice as often as one of weight 10; weight 0 only when
// every other has failed).
func Order(gws []Gateway, r *rand.Rand) []Gateway {
	out := append([]Gateway(nil), gws...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Priority < out[j].Priority })
	for start := 0; start < len(out); {
		end := start
		for end < len(out) && out[end].Priority == out[start].Priority {
			end++
		}
		weightedShuffle(out[start:end], r)
		start = end
	}
	return out
}

// weightedShuffle orders g by repeated weighted draws without replacement.
func weightedShuffle(g []Gateway, r *rand.Rand) {
	for i := 0; i < len(g)-1; i++ {
		total := 0
		for _, x := range g[i:] {
			total += x.Weight
		}
		if total == 0 {
			return
		}
		pick := r.IntN(total)
		for j := i; j < len(g); j++ {
			if pick < g[j].Weight {
				g[i], g[j] = g[j], g[i]
				break
			}
			pick -= g[j].Weight
		}
	}
}
