package keys

import (
	"strings"
	"testing"

	"trunkgate/internal/sqldb/sqldbtest"
)

// FuzzParse: key text comes from outside (Authorization headers, the
// WebSocket handshake, CLI flags). Parse must never panic, must accept only
// the documented layout, and Redact must leave no secret behind.
func FuzzParse(f *testing.F) {
	_, live := NewText(Live)
	_, test := NewText(Test)
	for _, s := range []string{live, test, "", "tg_", "tg_live_", live[:len(live)-1], live + "x",
		strings.Replace(live, "_", "-", -1), "tg_prod_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
		"Bearer " + live, "x" + test + "y", strings.ToUpper(live), "tg_live_\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		p, err := Parse(text)
		if err == nil {
			if len(text) != TextLen || text != "tg_"+string(p.Mode)+"_"+p.ID+text[prefixLen+idLen:] {
				t.Fatalf("Parse(%q) accepted %+v", text, p)
			}
			if !p.Mode.Valid() || !ValidID(p.ID) || !isBase62(text[prefixLen+idLen+1:]) {
				t.Fatalf("Parse(%q) = %+v: not a key", text, p)
			}
		} else if err != ErrMalformed {
			t.Fatalf("Parse error %v is not ErrMalformed", err)
		}
		red := Redact(text)
		if m := keyText.FindString(red); m != "" {
			t.Fatalf("Redact(%q) = %q still holds %q", text, red, m)
		}
		if err == nil && strings.Contains(red, text[prefixLen+idLen+1:]) {
			t.Fatalf("Redact(%q) = %q keeps the secret", text, red)
		}
	})
}

func TestMain(m *testing.M) { sqldbtest.Main(m) }
