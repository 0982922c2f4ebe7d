package cliapp

import (
	"errors"
	"fmt"
	"testing"
)

func TestWithHintKeepsTheExitCode(t *testing.T) {
	usage := Usage("old hint", "bad flag")
	for name, tc := range map[string]struct {
		err      error
		code     int
		conseq   bool
		wantHint string
	}{
		"plain error":           {errors.New("x"), ExitFailure, false, "new"},
		"usage error with hint": {usage, ExitUsage, false, "new"},
		"wrapped usage error":   {fmt.Errorf("ctx: %w", usage), ExitUsage, false, "new"},
		"bad pages":             {&Error{Code: ExitBadPage, Err: errors.New("p")}, ExitBadPage, false, "new"},
		"consequence":           {Consequence(errors.New("sink gone")), ExitFailure, true, "new"},
	} {
		var e *Error
		if !errors.As(WithHint(tc.err, "new"), &e) {
			t.Fatalf("%s: not an *Error", name)
		}
		if e.Code != tc.code || e.Hint != tc.wantHint || e.Consequence != tc.conseq {
			t.Errorf("%s: code %d hint %q consequence %v, want %d %q %v", name, e.Code, e.Hint, e.Consequence, tc.code, tc.wantHint, tc.conseq)
		}
	}
	if WithHint(nil, "h") != nil {
		t.Error("WithHint(nil) is not nil")
	}
}

func TestConsequenceIsMarked(t *testing.T) {
	if !IsConsequence(fmt.Errorf("w: %w", Consequence(errors.New("x")))) {
		t.Error("a wrapped consequence is not one")
	}
	if IsConsequence(errors.New("x")) || IsConsequence(Usage("h", "u")) {
		t.Error("a cause is taken for a consequence")
	}
}
