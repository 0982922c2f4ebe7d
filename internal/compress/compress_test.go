package compress

import (
	"bytes"
	"testing"
)

func TestXZRoundTripAndLengthCheck(t *testing.T) {
	raw := bytes.Repeat([]byte("pgbb page "), 10000)
	c, err := XZ(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) >= len(raw)/10 {
		t.Fatalf("compressed to %d of %d bytes", len(c), len(raw))
	}
	got, err := UnXZ(c, len(raw))
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := UnXZ(c, len(raw)-1); err == nil {
		t.Fatal("longer content accepted")
	}
	if _, err := UnXZ(c, len(raw)+1); err == nil {
		t.Fatal("shorter content accepted")
	}
	c[len(c)/2] ^= 0xff
	if _, err := UnXZ(c, len(raw)); err == nil {
		t.Fatal("damaged stream accepted")
	}
}
