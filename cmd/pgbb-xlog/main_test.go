package main

import (
	"strings"
	"testing"
)

// The flag parser drops a "--" that directly follows the flags; the raw command line tells them apart.
func TestSplitArgsSeparatesDSNFromCommand(t *testing.T) {
	cases := []struct {
		args, raw []string
		dsn       string
		child     string
		bad       bool
	}{
		{args: []string{"host=x", "--", "sh", "-c", "a"}, raw: []string{"-v", "host=x", "--", "sh", "-c", "a"}, dsn: "host=x", child: "sh -c a"},
		{args: []string{"sh", "-c", "a"}, raw: []string{"-v", "--", "sh", "-c", "a"}, child: "sh -c a"},
		{args: []string{"host=x"}, raw: []string{"host=x"}, dsn: "host=x"},
		{args: nil, raw: nil},
		{args: []string{"a", "b"}, raw: []string{"a", "b"}, bad: true},
		{args: []string{"a", "b", "--", "c"}, raw: []string{"a", "b", "--", "c"}, bad: true},
		{args: []string{"host=x", "--", "sh", "--", "y"}, raw: []string{"host=x", "--", "sh", "--", "y"}, dsn: "host=x", child: "sh -- y"},
	}
	for _, c := range cases {
		dsn, child, err := splitArgs(c.args, c.raw)
		if (err != nil) != c.bad {
			t.Errorf("%v: error %v", c.raw, err)
			continue
		}
		if !c.bad && (dsn != c.dsn || strings.Join(child, " ") != c.child) {
			t.Errorf("%v: dsn %q child %q", c.raw, dsn, child)
		}
	}
}
