package trunks

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"trunkgate/internal/sqldb"
	"trunkgate/internal/sqldb/sqldbtest"
)

func TestNormaliseNumber(t *testing.T) {
	for in, want := range map[string]string{
		"+15550100": "+15550100", "15550100": "+15550100", "+1 (555) 010-0": "+15550100", "tel:+44 20 7946 0000": "+442079460000",
		"": "", "sipp": "", "+": "", "1234567890123456": "", "+1555*": "", "1+555": "",
	} {
		got, ok := NormaliseNumber(in)
		if got != want || ok != (want != "") {
			t.Errorf("NormaliseNumber(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func validSpec() Spec {
	return Spec{KeyID: "AAAAAAAAAAAA", Numbers: []string{"+15550100"}, AIURL: "wss://agent.example/s", AllowedSources: []string{"198.51.100.0/24", "203.0.113.7"}}
}

// TestDigestHA1: RFC 2617 §3.5's example; the trunk keeps HA1, not the
// password.
func TestDigestHA1(t *testing.T) {
	if got := DigestHA1("Mufasa", "testrealm@host.com", "Circle Of Life"); got != "939e7578ed9e3c518a452acee763bce9" {
		t.Fatalf("HA1 %s", got)
	}
	s := validSpec()
	s.DigestUsername, s.DigestPassword = "pbx-1", "long enough"
	tr, err := s.build(time.Now())
	if err != nil || tr.DigestUser != "pbx-1" || tr.DigestHA1 != DigestHA1("pbx-1", DigestRealm, "long enough") {
		t.Fatalf("%+v, %v", tr, err)
	}
}

func TestSpecValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		ok     bool
	}{
		{"valid", func(*Spec) {}, true},
		{"no key", func(s *Spec) { s.KeyID = "" }, false},
		{"no numbers", func(s *Spec) { s.Numbers = nil }, false},
		{"bad number", func(s *Spec) { s.Numbers = []string{"abc"} }, false},
		{"http url", func(s *Spec) { s.AIURL = "https://agent.example" }, false},
		{"no host", func(s *Spec) { s.AIURL = "ws://" }, false},
		{"no sources", func(s *Spec) { s.AllowedSources = nil }, false},
		{"bad cidr", func(s *Spec) { s.AllowedSources = []string{"10.0.0.0/33"} }, false},
		{"l16 16k", func(s *Spec) { s.Format, s.SampleRate = FormatL16, 16000 }, true},
		{"l16 44k", func(s *Spec) { s.Format, s.SampleRate = FormatL16, 44100 }, false},
		{"unknown format", func(s *Spec) { s.Format = "opus" }, false},
		{"newline name", func(s *Spec) { s.Name = "a\nb" }, false},
		{"huge param", func(s *Spec) { s.Params = map[string]string{"k": string(make([]byte, 2000))} }, false},
		{"digest", func(s *Spec) { s.DigestUsername, s.DigestPassword = "pbx-1", "long enough" }, true},
		{"digest user only", func(s *Spec) { s.DigestUsername = "pbx-1" }, false},
		{"digest password only", func(s *Spec) { s.DigestPassword = "long enough" }, false},
		{"digest password short", func(s *Spec) { s.DigestUsername, s.DigestPassword = "pbx-1", "short" }, false},
		{"digest user quoted", func(s *Spec) { s.DigestUsername, s.DigestPassword = `a"b`, "long enough" }, false},
		{"digest password newline", func(s *Spec) { s.DigestUsername, s.DigestPassword = "pbx-1", "long\r\nenough" }, false},
		{"passed headers", func(s *Spec) { s.SIPHeaders = []string{"X-Customer-Id", "diversion", "User-To-User"} }, true},
		{"passed Contact", func(s *Spec) { s.SIPHeaders = []string{"Contact"} }, false},
		{"passed header not a token", func(s *Spec) { s.SIPHeaders = []string{"X-A B"} }, false},
		{"passed header X- alone", func(s *Spec) { s.SIPHeaders = []string{"X-"} }, false},
		{"17 passed headers", func(s *Spec) {
			for i := range 17 {
				s.SIPHeaders = append(s.SIPHeaders, fmt.Sprintf("X-H%d", i))
			}
		}, false},
		{"extensions", func(s *Spec) { s.ProtocolExtensions = true }, true},
	}
	for _, tt := range tests {
		s := validSpec()
		tt.mutate(&s)
		tr, err := s.build(time.Now())
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v is not ErrInvalid", tt.name, err)
		}
		if err == nil && tt.name == "passed headers" && !slices.Equal(tr.SIPHeaders, []string{"X-Customer-Id", "Diversion", "User-to-User"}) {
			t.Errorf("passed headers kept as %q", tr.SIPHeaders)
		}
		if err == nil && tt.name == "valid" {
			if tr.Format != FormatTwilio || tr.SampleRate != 8000 || !tr.AllowsSource(netip.MustParseAddr("203.0.113.7")) ||
				!tr.AllowsSource(netip.MustParseAddr("198.51.100.200")) || tr.AllowsSource(netip.MustParseAddr("198.51.101.1")) {
				t.Errorf("valid trunk %+v", tr)
			}
		}
	}
}

func openDB(t *testing.T) *sqldb.DB {
	t.Helper()
	db := sqldbtest.Open(t)
	// trunks reference keys; a minimal keys table stands in for the keys store.
	if _, err := db.Exec(`CREATE TABLE keys (id TEXT PRIMARY KEY); INSERT INTO keys VALUES ('AAAAAAAAAAAA')`); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestDirectory(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	store, err := NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := NewDirectory(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := validSpec()
	spec.Numbers = []string{"+15550100", "1 555 0101"}
	spec.Params = map[string]string{"lang": "en"}
	spec.DigestUsername, spec.DigestPassword = "pbx-1", "long enough"
	spec.ProtocolExtensions, spec.SIPHeaders = true, []string{"X-Customer-Id", "Diversion"}
	tr, err := dir.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := store.List(ctx)
	if err != nil || len(stored) != 1 || !stored[0].ProtocolExtensions || !slices.Equal(stored[0].SIPHeaders, spec.SIPHeaders) {
		t.Fatalf("stored %+v, %v", stored, err)
	}
	for _, n := range []string{"+15550100", "15550101", "+1-555-0101"} {
		if got, ok := dir.ByNumber(n); !ok || got.ID != tr.ID {
			t.Errorf("ByNumber(%q) = %v, %v", n, got, ok)
		}
	}
	if _, err := dir.Create(ctx, spec); !errors.Is(err, ErrConflict) {
		t.Fatalf("a number on two trunks: %v", err)
	}
	bad := validSpec()
	bad.KeyID, bad.Numbers = "BBBBBBBBBBBB", []string{"+15550199"}
	if _, err := dir.Create(ctx, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("trunk of a missing key: %v", err)
	}
	// A fresh directory reads the same back from the store.
	again, err := NewDirectory(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := again.ByNumber("+15550101")
	if !ok || got.AIURL != spec.AIURL || got.Params["lang"] != "en" || len(got.AllowedSources) != 2 || len(got.Numbers) != 2 ||
		got.DigestUser != "pbx-1" || got.DigestHA1 != tr.DigestHA1 {
		t.Fatalf("reloaded %+v", got)
	}
	if err := dir.Delete(ctx, tr.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := dir.ByNumber("+15550100"); ok {
		t.Fatal("number still routed after delete")
	}
	if err := dir.Delete(ctx, tr.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestValidAppHeaders(t *testing.T) {
	for _, tt := range []struct {
		h  map[string]string
		ok bool
	}{
		{map[string]string{"X-Campaign": "fall", "User-to-User": "56a390f3d2b7310023a2;encoding=hex"}, true},
		{map[string]string{"P-Asserted-Identity": "<sip:+15550100@x>"}, false}, // identity is the edge's to check
		{map[string]string{"X-A": "b\r\nVia: SIP/2.0/UDP evil"}, false},
		{map[string]string{"X-A": strings.Repeat("v", 257)}, false},
		{map[string]string{"X-A B": "c"}, false},
		{nil, true},
	} {
		if err := ValidAppHeaders(tt.h); (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: %v", tt.h, err)
		}
	}
}
