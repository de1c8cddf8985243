package billing

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Carriers publish their prices as CSV rate decks. ParseRateDeck reads
// one: a header row naming the columns (any order, other columns
// ignored), or none, and then prefix,rate[,description]:
//
//	prefix  (or code, dial_code, destination_prefix)  +44, 4420, "+44 7"
//	rate    (or price, rate_per_minute)  a decimal a minute in the currency: 0.0120
//	rate_micros                          or an integer of currency micros: 12000
//	description (or destination, name)   optional
//
// Blank lines and lines starting with # are skipped. Every bad row is
// reported with its line number; a deck with any bad row is refused whole
// (an operator fixes the deck, not half a price list).

// maxDeckRows bounds one import.
const maxDeckRows = 500_000

// LineError is one rejected row of a rate deck.
type LineError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// DeckError is a refused rate deck and why, by line.
type DeckError struct {
	Lines []LineError
}

func (e *DeckError) Error() string {
	if len(e.Lines) == 0 {
		return "rate deck refused"
	}
	more := ""
	if len(e.Lines) > 1 {
		more = fmt.Sprintf(" (and %d more bad lines)", len(e.Lines)-1)
	}
	return fmt.Sprintf("rate deck line %d: %s%s", e.Lines[0].Line, e.Lines[0].Error, more)
}

// Unwrap lets errors.Is see a deck error as invalid input.
func (e *DeckError) Unwrap() error { return ErrInvalidRate }

// maxDeckErrors stops reporting after this many bad lines.
const maxDeckErrors = 100

type deckColumns struct{ prefix, rate, micros, desc int }

// ParseRateDeck reads a rate deck; see above.
func ParseRateDeck(in io.Reader) ([]Rate, error) {
	r := csv.NewReader(in)
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.Comment = '#'
	r.ReuseRecord = true
	cols := deckColumns{prefix: 0, rate: 1, micros: -1, desc: 2}
	var rows []Rate
	bad := &DeckError{}
	seen := map[string]int{}
	first := true
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line := 0
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			bad.add(line, "not CSV: "+err.Error())
			if len(bad.Lines) >= maxDeckErrors {
				break
			}
			continue
		}
		line, _ := r.FieldPos(0)
		if first {
			first = false
			if c, ok := deckHeader(rec); ok {
				cols = c
				continue
			}
		}
		if len(rows) >= maxDeckRows {
			bad.add(line, fmt.Sprintf("more than %d rows", maxDeckRows))
			break
		}
		row, err := deckRow(rec, cols)
		if err == nil {
			if prev, dup := seen[row.Prefix]; dup {
				err = fmt.Errorf("prefix %s already on line %d", row.Prefix, prev)
			}
		}
		if err != nil {
			bad.add(line, err.Error())
			if len(bad.Lines) >= maxDeckErrors {
				break
			}
			continue
		}
		seen[row.Prefix] = line
		rows = append(rows, row)
	}
	if len(bad.Lines) > 0 {
		return nil, bad
	}
	return rows, nil
}

func (e *DeckError) add(line int, msg string) {
	e.Lines = append(e.Lines, LineError{Line: line, Error: msg})
}

// deckHeader recognises a header row and maps its columns.
func deckHeader(rec []string) (deckColumns, bool) {
	c := deckColumns{prefix: -1, rate: -1, micros: -1, desc: -1}
	for i, name := range rec {
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "prefix", "code", "dial_code", "dialcode", "destination_prefix":
			c.prefix = i
		case "rate", "price", "rate_per_minute":
			c.rate = i
		case "rate_micros", "rate_per_minute_micros":
			c.micros = i
		case "description", "destination", "name":
			c.desc = i
		}
	}
	return c, c.prefix >= 0 && (c.rate >= 0 || c.micros >= 0)
}

func deckRow(rec []string, c deckColumns) (Rate, error) {
	cell := func(i int) string {
		if i < 0 || i >= len(rec) {
			return ""
		}
		return strings.TrimSpace(rec[i])
	}
	row := Rate{Prefix: cell(c.prefix), Description: cell(c.desc)}
	if row.Prefix == "" {
		return row, errors.New("no prefix")
	}
	var err error
	switch {
	case c.micros >= 0 && cell(c.micros) != "":
		row.PerMinute, err = strconv.ParseInt(cell(c.micros), 10, 64)
		if err != nil {
			return row, fmt.Errorf("rate_micros %q: not an integer", cell(c.micros))
		}
	case cell(c.rate) != "":
		row.PerMinute, err = ParseMoney(cell(c.rate))
		if err != nil {
			return row, err
		}
	default:
		return row, errors.New("no rate")
	}
	return row, row.Validate()
}

// ParseMoney reads a decimal amount of currency ("0.012", "12", "1.5")
// as micros, exactly: no floating point, at most six decimal places.
func ParseMoney(s string) (int64, error) {
	whole, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	frac = strings.TrimRight(frac, "0")
	if whole == "" {
		whole = "0"
	}
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("rate %q: %s", s, why)
	}
	if len(frac) > 6 {
		return bad("more than six decimal places (a micro is the smallest unit)")
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return bad("want a decimal number such as 0.0120")
			}
		}
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > 1_000_000_000 {
		return bad("too large")
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	return w*1_000_000 + f, nil
}
