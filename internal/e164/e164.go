// Package e164 knows the country calling codes of ITU-T E.164: which
// leading digits of an international number name its country (or, for
// +1 and +7, its shared numbering plan). Reports group calls by them and
// the anomaly rules watch for a key's first call to a new one.
package e164

// twoDigit are the two-digit country codes; +1 and +7 are the one-digit
// ones, and every other code has three digits (E.164 codes are
// prefix-free).
var twoDigit = map[string]bool{
	"20": true, "27": true, "30": true, "31": true, "32": true, "33": true, "34": true, "36": true, "39": true,
	"40": true, "41": true, "43": true, "44": true, "45": true, "46": true, "47": true, "48": true, "49": true,
	"51": true, "52": true, "53": true, "54": true, "55": true, "56": true, "57": true, "58": true,
	"60": true, "61": true, "62": true, "63": true, "64": true, "65": true, "66": true,
	"81": true, "82": true, "84": true, "86": true,
	"90": true, "91": true, "92": true, "93": true, "94": true, "95": true, "98": true,
}

// CountryCode is the country calling code of an E.164 number in "+"
// form ("+442071234567" → "+44"), or "" for anything else.
func CountryCode(number string) string {
	if len(number) < 2 || number[0] != '+' {
		return ""
	}
	d := number[1:]
	for _, c := range d {
		if c < '0' || c > '9' {
			return ""
		}
	}
	switch {
	case d[0] == '1' || d[0] == '7':
		return number[:2]
	case len(d) >= 2 && twoDigit[d[:2]]:
		return number[:3]
	case len(d) >= 3:
		return number[:4]
	}
	return ""
}
