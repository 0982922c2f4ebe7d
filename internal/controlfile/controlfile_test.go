package controlfile

import (
	"os"
	"testing"
)

func TestParseAcceptsRealControlFileAndRejectsTornOne(t *testing.T) {
	b, err := os.ReadFile("testdata/pg_control-15")
	if err != nil {
		t.Fatal(err)
	}
	in, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if in.ControlVersion != 1300 || in.SystemID == 0 {
		t.Fatalf("%+v", in)
	}
	b[100] ^= 1
	if _, err := Parse(b); err == nil {
		t.Fatal("damaged pg_control accepted")
	}
	if _, err := Parse(b[:100]); err == nil {
		t.Fatal("short pg_control accepted")
	}
}
