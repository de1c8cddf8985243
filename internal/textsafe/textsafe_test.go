package textsafe

import "testing"

func TestTerminal(t *testing.T) {
	for in, want := range map[string]string{
		"acme":                      "acme",
		"Acmé GmbH":                 "Acmé GmbH",
		"1555\x1bcRESET\x07":        `1555\x1bcRESET\a`,
		"a\r\nb":                    `a\r\nb`,
		"evil\u202etxt.exe":         `evil\u202etxt.exe`,
		"bad \xff byte":             `bad \xff byte`,
		`back\slash "quoted"`:       `back\\slash "quoted"`,
		"tab\tinside":               `tab\tinside`,
		"\u0085 NEL (a C1 control)": `\u0085 NEL (a C1 control)`,
	} {
		if got := Terminal(in); got != want {
			t.Errorf("Terminal(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]bool{"acme": false, "Acmé": false, "a\x1b": true, "a\u202e": true, "\xff": true, "a\tb": true} {
		if got := HasControl(in); got != want {
			t.Errorf("HasControl(%q) = %v", in, got)
		}
	}
}
