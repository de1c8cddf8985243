package billing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"trunkgate/keys"
)

var op = keys.Actor{KeyID: "admin0000000", Source: "test"}

func TestRateLookup(t *testing.T) {
	ctx := context.Background()
	rates, err := NewRates(ctx, newStore(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rates.Replace(ctx, op, "", []Rate{
		{Prefix: "+44", PerMinute: 10_000}, {Prefix: "+447", PerMinute: 50_000}, {Prefix: "+1", PerMinute: 5_000},
		{Prefix: "+1900", PerMinute: 900_000},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := rates.Put(ctx, op, Rate{KeyID: "kA", Prefix: "44", PerMinute: 8_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := rates.Put(ctx, op, Rate{KeyID: "kA", Prefix: "+1900", PerMinute: 0, Description: "free premium for kA"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key, dir, dest string
		keyRate        int64
		want           int64
		prefix         string
	}{
		{"kB", "outbound", "+442071234567", 1, 10_000, "+44"},
		{"kB", "outbound", "+447700900123", 1, 50_000, "+447"},
		{"kA", "outbound", "+442071234567", 1, 8_000, "+44"},   // the key's row beats the edge's at equal length
		{"kA", "outbound", "+447700900123", 1, 50_000, "+447"}, // the longest prefix wins, whoever's
		{"kA", "outbound", "+19005550100", 1, 0, "+1900"},      // a key's rate of 0 is a rate
		{"kB", "outbound", "+15550100", 1, 5_000, "+1"},
		{"kB", "outbound", "+33123456", 7_777, 7_777, ""}, // no table row: the key's own rate
		{"kB", "inbound", "+442071234567", 3_333, 3_333, ""},
	}
	for _, tt := range tests {
		got, prefix := rates.Rate(tt.key, tt.dir, tt.dest, tt.keyRate)
		if got != tt.want || prefix != tt.prefix {
			t.Errorf("%s %s %s: %d by %q, want %d by %q", tt.key, tt.dir, tt.dest, got, prefix, tt.want, tt.prefix)
		}
	}
	// A restart reads the same tables back.
	again, err := NewRates(ctx, rates.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := again.Rate("kA", "outbound", "+442071234567", 1); got != 8_000 {
		t.Fatalf("after reload: %d", got)
	}
	if found, err := rates.Delete(ctx, op, "kA", "+44"); !found || err != nil {
		t.Fatalf("delete: %v %v", found, err)
	}
	if got, _ := rates.Rate("kA", "outbound", "+442071234567", 1); got != 10_000 {
		t.Fatalf("after deleting the key's row: %d", got)
	}
	if _, err := rates.Put(ctx, op, Rate{Prefix: "+44x"}); !errors.Is(err, ErrInvalidRate) {
		t.Fatalf("bad prefix: %v", err)
	}
}

func TestParseMoney(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0.012", 12_000, true}, {"0.0120", 12_000, true}, {"12", 12_000_000, true}, {"1.5", 1_500_000, true},
		{".5", 500_000, true}, {"0.000001", 1, true}, {"0.0000010", 1, true}, {"0.0000001", 0, false},
		{"-1", 0, false}, {"1e3", 0, false}, {"$0.01", 0, false}, {"1,000", 0, false}, {"", 0, true},
		{"99999999999", 0, false},
	} {
		got, err := ParseMoney(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMoney(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestParseRateDeck(t *testing.T) {
	good := []struct {
		name, deck string
		want       string
	}{
		{"header, decimal rates", "prefix,rate,description\n+44,0.0100,UK\n+447,0.05,UK mobile\n",
			"+44=10000(UK) +447=50000(UK mobile)"},
		{"other names and order", "Destination,Dial_Code,Price\nGermany,49,0.0095\n\n# comment\nGermany mobile,\"+49 15\",0.03\n",
			"+49=9500(Germany) +4915=30000(Germany mobile)"},
		{"micros", "code,rate_micros\n1,5000\n", "+1=5000()"},
		{"no header", "+33,0.02\n+331,0.015,Paris\n", "+33=20000() +331=15000(Paris)"},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := ParseRateDeck(strings.NewReader(tt.deck))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, fmt.Sprintf("%s=%d(%s)", r.Prefix, r.PerMinute, r.Description))
			}
			if strings.Join(got, " ") != tt.want {
				t.Fatalf("got %s, want %s", strings.Join(got, " "), tt.want)
			}
		})
	}
	deck := "prefix,rate\n" + // line 1
		"+44,0.01\n" + // 2: fine
		"+44x,0.01\n" + // 3: bad prefix
		"+45,-0.01\n" + // 4: negative
		"+46,0.00000001\n" + // 5: too precise
		"+44,0.02\n" + // 6: duplicate
		",0.01\n" + // 7: no prefix
		"+47\n" + // 8: no rate
		"+48,\"0.01\n" // 9: broken quote
	_, err := ParseRateDeck(strings.NewReader(deck))
	var de *DeckError
	if !errors.As(err, &de) || !errors.Is(err, ErrInvalidRate) {
		t.Fatalf("bad deck: %v", err)
	}
	var lines []int
	for _, l := range de.Lines {
		lines = append(lines, l.Line)
	}
	if fmt.Sprint(lines) != "[3 4 5 6 7 8 9]" || !strings.Contains(de.Lines[3].Error, "already on line 2") {
		t.Fatalf("bad lines %v: %+v", lines, de.Lines)
	}
}

// FuzzParseRateDeck: whatever a deck holds, parsing neither panics nor
// returns a row that would not pass validation.
func FuzzParseRateDeck(f *testing.F) {
	f.Add("prefix,rate,description\n+44,0.0100,UK\n")
	f.Add("code,rate_micros\n1,5000\n\"x\n")
	f.Add("+33,.5\n#c\n\n+33,1\n")
	f.Fuzz(func(t *testing.T, deck string) {
		rows, err := ParseRateDeck(strings.NewReader(deck))
		if err != nil {
			return
		}
		for _, r := range rows {
			if again := r; again.Validate() != nil || again.Prefix != r.Prefix || r.PerMinute < 0 {
				t.Fatalf("row %+v does not validate", r)
			}
		}
	})
}
