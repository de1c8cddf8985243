package e164

import "testing"

func TestCountryCode(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"+15550100", "+1"}, {"+74951234567", "+7"}, {"+442071234567", "+44"}, {"+4930123", "+49"},
		{"+353123456", "+353"}, {"+8821234567", "+882"}, {"+2341234", "+234"}, {"+27111", "+27"},
		{"+86101234", "+86"}, {"+9715", "+971"}, {"+44", "+44"}, {"+35", ""}, {"+", ""}, {"", ""},
		{"4420", ""}, {"+44a1", ""},
	} {
		if got := CountryCode(tt.in); got != tt.want {
			t.Errorf("CountryCode(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
