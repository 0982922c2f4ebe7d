package resume

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func digestsOf(b []byte) []byte {
	var out []byte
	for lo := 0; lo < len(b); lo += PageSize {
		s := sha256.Sum256(b[lo:min(lo+PageSize, len(b))])
		out = append(out, s[:]...)
	}
	return out
}

func TestProvedPagesOnlyWhereEveryByteIsEqual(t *testing.T) {
	server := bytes.Repeat([]byte("0123456789abcdef"), 3*PageSize/16+100) // 3 pages and a short one
	n := len(server)
	d := digestsOf(server)
	flipped := bytes.Clone(server)
	flipped[PageSize+17] ^= 1
	for _, c := range []struct {
		name   string
		stored []byte
		want   []bool
	}{
		{"equal", server, []bool{true, true, true, true}},
		{"a byte flipped in page 1", flipped, []bool{true, false, true, true}},
		{"cut inside page 2", server[:2*PageSize+5], []bool{true, true, false, false}},
		{"cut inside the short last page", server[:n-1], []bool{true, true, true, false}},
		{"missing", nil, []bool{false, false, false, false}},
		{"longer than the server's", append(bytes.Clone(server), 'x'), []bool{true, true, true, true}},
		{"zeros where the server has data", make([]byte, n), []bool{false, false, false, false}},
	} {
		got, err := ProvedPages(n, d, c.stored)
		if err != nil {
			t.Fatal(err)
		}
		for k := range c.want {
			if got[k] != c.want[k] {
				t.Errorf("%s: page %d proved=%v, want %v", c.name, k, got[k], c.want[k])
			}
		}
	}
	if _, err := ProvedPages(n, d[:len(d)-1], server); err == nil {
		t.Error("digests of the wrong length accepted")
	}
	if got, err := ProvedPages(0, nil, server); err != nil || len(got) != 0 {
		t.Errorf("empty range: %v, %v", got, err)
	}
}

func TestStateRoundTripAndRefusals(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(dir); !errors.Is(err, ErrNoState) {
		t.Fatalf("no state file: %v", err)
	}
	s := State{SystemID: "7312345678901234567", ServerVersion: 150004, Format: "plain", BackupID: "x", Runs: 2,
		Tablespaces: []Tablespace{{OID: 16384, Location: "/srv/ts", Directory: "/backup/ts"}}}
	if err := os.WriteFile(filepath.Join(dir, StateName), Encode(s), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := got.SystemIdentifier(); id != 7312345678901234567 || got.Runs != 2 || len(got.Tablespaces) != 1 || got.Version != Version {
		t.Fatalf("read back %+v", got)
	}
	for name, body := range map[string]string{
		"not json":          "{",
		"unknown key":       `{"pgbb_incomplete":1,"system_identifier":"1","format":"plain","x":1}`,
		"other version":     `{"pgbb_incomplete":2,"system_identifier":"1","format":"plain"}`,
		"bad system id":     `{"pgbb_incomplete":1,"system_identifier":"-1","format":"plain"}`,
		"tar":               `{"pgbb_incomplete":1,"system_identifier":"1","format":"tar"}`,
		"relative location": `{"pgbb_incomplete":1,"system_identifier":"1","format":"plain","tablespaces":[{"oid":1,"location":"a","directory":"/b"}]}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, StateName), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(dir); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
