package server

import (
	"reflect"
	"testing"
)

// A path takes the matching statements when any byte is 0x80 or above: ASCII is the same bytes in every
// server encoding, anything else may be invalid or mean other bytes in the database encoding.
func TestPathsWithHighBytesAreMatched(t *testing.T) {
	for _, tc := range []struct {
		path   string
		ascii  bool
		prefix string
		rest   []string
	}{
		{"base/1/1259", true, "", nil},
		{"a\tb\\c\x7f", true, "", nil},
		{"caf\xe9.conf", false, ".", []string{"caf\xe9.conf"}},
		{"na\xc3\xafve", false, ".", []string{"na\xc3\xafve"}}, // valid UTF-8 is matched too
		{"d\xe9j\xe0/sub/plain", false, ".", []string{"d\xe9j\xe0", "sub", "plain"}},
		{"pg_tblspc/16384/d\xe9r/x", false, "pg_tblspc/16384", []string{"d\xe9r", "x"}},
		{"a/b\x80", false, "a", []string{"b\x80"}},
	} {
		if got := ASCIIPath(tc.path); got != tc.ascii {
			t.Errorf("ASCIIPath(%q) = %v", tc.path, got)
		}
		if tc.ascii {
			continue
		}
		prefix, rest := splitPath(tc.path)
		var got []string
		for _, r := range rest {
			got = append(got, string(r))
		}
		if prefix != tc.prefix || !reflect.DeepEqual(got, tc.rest) {
			t.Errorf("splitPath(%q) = %q, %q; want %q, %q", tc.path, prefix, got, tc.prefix, tc.rest)
		}
	}
}
