// Package textsafe owns two rules about text that came from outside (an
// operator's API call, a carrier's SIP message): what a name or parameter
// the edge stores may hold, and how such text is printed to a terminal. It
// knows nothing of where the text goes.
package textsafe

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// HasControl reports whether s holds a control character (C0, DEL, C1,
// or Unicode format characters such as bidirectional overrides) or is not
// valid UTF-8: names and parameters the API accepts must not.
func HasControl(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0
}

// Terminal renders s for a terminal or a table: control and format
// characters and invalid bytes become Go escapes (\x1b, \u202e), so that
// text an outsider sent cannot move the cursor, reset the terminal or
// reorder what an operator reads. Plain text is returned unchanged.
func Terminal(s string) string {
	if !HasControl(s) && !strings.Contains(s, `\`) {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	q = q[1 : len(q)-1]
	// QuoteToGraphic escapes quotes too; a table cell does not need that.
	return strings.ReplaceAll(q, `\"`, `"`)
}
