package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// AppMessage is a message from the application, parsed without copying:
// its fields are slices of the input and valid until the input is reused.
type AppMessage struct {
	Event     []byte
	StreamSid []byte
	Payload   []byte // media.payload: base64 text
	MarkName  []byte // mark.name
}

// ErrBadMessage wraps every parse error.
var ErrBadMessage = errors.New("malformed application message")

// maxDepth bounds nesting in values the parser skips.
const maxDepth = 32

// ParseAppMessage reads the fields the edge uses from one JSON text frame:
// event, streamSid, media.payload and mark.name. Everything else is
// skipped. The common case — no escapes in those strings — allocates
// nothing; a message whose strings carry escapes goes through
// encoding/json instead.
func ParseAppMessage(data []byte, m *AppMessage) error {
	*m = AppMessage{}
	p := parser{data: data}
	escaped, err := p.message(m)
	if err != nil {
		return err
	}
	if escaped {
		return parseSlow(data, m)
	}
	return nil
}

type parser struct {
	data    []byte
	pos     int
	escaped bool
}

func (p *parser) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", ErrBadMessage, what, p.pos)
}

func (p *parser) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) peek() byte {
	p.ws()
	if p.pos >= len(p.data) {
		return 0
	}
	return p.data[p.pos]
}

func (p *parser) expect(c byte) error {
	if p.peek() != c {
		return p.fail(fmt.Sprintf("want %q", c))
	}
	p.pos++
	return nil
}

// str reads a JSON string and returns its raw content (escapes left in;
// p.escaped records that there were some).
func (p *parser) str() ([]byte, error) {
	if err := p.expect('"'); err != nil {
		return nil, err
	}
	start := p.pos
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			s := p.data[start:p.pos]
			p.pos++
			return s, nil
		case c == '\\':
			p.escaped = true
			p.pos += 2
		case c < 0x20:
			return nil, p.fail("control character in string")
		default:
			p.pos++
		}
	}
	return nil, p.fail("unterminated string")
}

// object walks the members of an object, calling field for each key with
// the parser positioned at the value; field must consume the value.
func (p *parser) object(field func(key []byte) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	if p.peek() == '}' {
		p.pos++
		return nil
	}
	for {
		key, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return nil
		default:
			return p.fail("want , or }")
		}
	}
}

func (p *parser) message(m *AppMessage) (bool, error) {
	err := p.object(func(key []byte) error {
		var err error
		switch string(key) { // no allocation: the compiler compares in place
		case "event":
			m.Event, err = p.stringValue()
		case "streamSid":
			m.StreamSid, err = p.stringValue()
		case "media":
			err = p.inner(func(k []byte) (e error) {
				if string(k) == "payload" {
					m.Payload, e = p.stringValue()
					return e
				}
				return p.skip(1)
			})
		case "mark":
			err = p.inner(func(k []byte) (e error) {
				if string(k) == "name" {
					m.MarkName, e = p.stringValue()
					return e
				}
				return p.skip(1)
			})
		default:
			err = p.skip(0)
		}
		return err
	})
	if err != nil {
		return false, err
	}
	if p.ws(); p.pos != len(p.data) {
		return false, p.fail("trailing data")
	}
	if m.Event == nil {
		return false, p.fail("no event")
	}
	return p.escaped, nil
}

// stringValue reads a string, or null as an empty field.
func (p *parser) stringValue() ([]byte, error) {
	if p.peek() == 'n' {
		return nil, p.literal("null")
	}
	return p.str()
}

// inner parses a nested object if the value is one, else skips the value.
func (p *parser) inner(field func(key []byte) error) error {
	if p.peek() != '{' {
		return p.skip(1)
	}
	return p.object(field)
}

func (p *parser) literal(word string) error {
	if !bytes.HasPrefix(p.data[p.pos:], []byte(word)) {
		return p.fail("bad literal")
	}
	p.pos += len(word)
	return nil
}

// skip consumes one JSON value of any kind.
func (p *parser) skip(depth int) error {
	if depth > maxDepth {
		return p.fail("nested too deep")
	}
	switch c := p.peek(); {
	case c == '"':
		_, err := p.str()
		return err
	case c == '{':
		return p.object(func([]byte) error { return p.skip(depth + 1) })
	case c == '[':
		p.pos++
		if p.peek() == ']' {
			p.pos++
			return nil
		}
		for {
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			switch p.peek() {
			case ',':
				p.pos++
			case ']':
				p.pos++
				return nil
			default:
				return p.fail("want , or ]")
			}
		}
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		for p.pos < len(p.data) && bytes.IndexByte([]byte("+-0123456789.eE"), p.data[p.pos]) >= 0 {
			p.pos++
		}
		if !json.Valid(p.data[start:p.pos]) {
			return p.fail("bad number")
		}
		return nil
	default:
		return p.fail("want a value")
	}
}

// parseSlow handles messages whose strings use escapes (e.g. "\/" in a
// base64 payload, which some JSON encoders write).
func parseSlow(data []byte, m *AppMessage) error {
	var v struct {
		Event     *string `json:"event"`
		StreamSid *string `json:"streamSid"`
		Media     struct {
			Payload *string `json:"payload"`
		} `json:"media"`
		Mark struct {
			Name *string `json:"name"`
		} `json:"mark"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	if v.Event == nil {
		return fmt.Errorf("%w: no event", ErrBadMessage)
	}
	b := func(s *string) []byte {
		if s == nil {
			return nil
		}
		return []byte(*s)
	}
	*m = AppMessage{Event: b(v.Event), StreamSid: b(v.StreamSid), Payload: b(v.Media.Payload), MarkName: b(v.Mark.Name)}
	return nil
}
