package backupid

import "testing"

func TestNewParsesBack(t *testing.T) {
	for _, id := range []ID{
		{SystemID: 7312345678901234567, Timeline: 1, StartLSN: 0x3000028, Nonce: 0x9f3c21ab},
		{SystemID: 1, Timeline: 12, StartLSN: 0xA1_0000_0028, Nonce: 0},
		{SystemID: ^uint64(0), Timeline: ^uint32(0), StartLSN: ^uint64(0), Nonce: ^uint32(0)},
	} {
		s := New(id.SystemID, id.Timeline, id.StartLSN, id.Nonce)
		got, err := Parse(s)
		if err != nil || got != id {
			t.Errorf("Parse(New(%+v) = %q) = %+v, %v", id, s, got, err)
		}
		if !Valid(s) {
			t.Errorf("Valid(%q) = false", s)
		}
	}
	if s := New(7312345678901234567, 1, 0x3000028, 0x9f3c21ab); s != "7312345678901234567-1-0-3000028-9f3c21ab" {
		t.Errorf("New wrote %q, not docs/worklist.md's example", s)
	}
}

func TestParseRefusesOtherForms(t *testing.T) {
	for _, id := range []string{"", "1-1-0-1", "1-1-0-1-aa", "1-1-0-1-aa-bb", "x-1-0-1-9f3c21ab", "1-1-0-G-9f3c21ab",
		"1-1-100000000-1-9f3c21ab", "1-1-0-1-9f3c21abc", "inspect-only"} {
		if got, err := Parse(id); err == nil {
			t.Errorf("Parse(%q) = %+v", id, got)
		}
	}
}

func TestValidIsTheTrailerForm(t *testing.T) {
	for _, id := range []string{"a", "0", "-", "7312345678901234567-1-0-3000028-9f3c21ab", "ABC-def-123", "inspect-only"} {
		if !Valid(id) {
			t.Errorf("Valid(%q) = false", id)
		}
	}
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'a'
	}
	for _, id := range []string{"", "a b", "a_b", "a\n", "a\t", "a.b", "a/b", "é", string(long)} {
		if Valid(id) {
			t.Errorf("Valid(%q) = true", id)
		}
	}
}
