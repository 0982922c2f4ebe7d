package worklist

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/backupid"
)

// needsEscape is the escaping rule of docs/worklist.md, written independently of EscapePath.
func needsEscape(c byte) bool { return c < 0x20 || c == 0x7f || c >= 0x80 || c == '\\' }

// checkLineChars checks the "lines are always ASCII and never contain a TAB or newline inside a field" rule:
// only printable ASCII and exactly wantTabs field separators.
func checkLineChars(t *testing.T, line string, wantTabs int) {
	t.Helper()
	tabs := 0
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\t':
			tabs++
		case c < 0x20 || c >= 0x7f:
			t.Errorf("line %q has byte 0x%02x at %d", line, c, i)
		}
	}
	if tabs != wantTabs {
		t.Errorf("line %q has %d TABs, want %d", line, tabs, wantTabs)
	}
}

func TestEscapeRoundTripEveryByte(t *testing.T) {
	for v := 0; v < 256; v++ {
		c := byte(v)
		t.Run(fmt.Sprintf("0x%02x", v), func(t *testing.T) {
			p := "a" + string([]byte{c}) + "z"
			e := EscapePath(p)
			want := p
			if needsEscape(c) {
				want = fmt.Sprintf("a\\x%02xz", c)
			}
			if e != want {
				t.Fatalf("EscapePath(%q) = %q, want %q", p, e, want)
			}
			got, err := UnescapePath(e)
			if err != nil {
				t.Fatalf("UnescapePath(%q): %v", e, err)
			}
			if got != p {
				t.Fatalf("UnescapePath(EscapePath(%q)) = %q", p, got)
			}

			// The same through a whole line. NUL cannot be in a file name; CheckPath refuses it.
			it := Item{Seq: uint64(v) + 1, Kind: File, Offset: int64(v), Length: 8192, Path: p}
			line := FormatItem(it)
			checkLineChars(t, line, 4)
			l, err := ParseLine(line)
			if c == 0 {
				if err == nil || !strings.Contains(err.Error(), "NUL") {
					t.Fatalf("ParseLine(%q) = %v, %v; want a NUL error", line, l, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLine(%q): %v", line, err)
			}
			if l.Item == nil || !reflect.DeepEqual(*l.Item, it) {
				t.Fatalf("ParseLine(%q) = %+v, want %+v", line, l.Item, it)
			}
		})
	}
}

func TestEscapeRoundTripAllBytesInOnePath(t *testing.T) {
	var b []byte
	for v := 0; v < 256; v++ {
		b = append(b, byte(v))
	}
	p := string(b)
	e := EscapePath(p)
	for i := 0; i < len(e); i++ {
		if e[i] < 0x20 || e[i] >= 0x7f {
			t.Fatalf("escaped path has byte 0x%02x at %d", e[i], i)
		}
	}
	got, err := UnescapePath(e)
	if err != nil {
		t.Fatal(err)
	}
	if got != p {
		t.Fatalf("round trip changed the path: %q", got)
	}
	// Escapes are the only backslashes, and they are lowercase.
	if strings.Contains(e, `\x5C`) || !strings.Contains(e, `\x5c`) || !strings.Contains(e, `\xff`) {
		t.Fatalf("escaped path %q does not use lowercase \\xHH", e)
	}
}

func TestLinesNeverContainTabOrNewlineInsideFields(t *testing.T) {
	paths := []string{
		"a\tb", "a\nb", "a\rb", "a\r\nb", "tab\t", "\nnl", "base/1/\t\t", "x\\ty", "\x00", "\x7f\x80\xff",
		"日本語/ファイル", "a\\nb", "#comment", "end",
	}
	for _, p := range paths {
		for _, k := range []Kind{File, Dir, Link} {
			line := FormatItem(Item{Seq: 1, Kind: k, Path: p})
			checkLineChars(t, line, 4)
			if f := strings.Split(line, "\t"); len(f) != 5 || f[4] != EscapePath(p) {
				t.Errorf("FormatItem(%q) = %q: path field not the escaped path", p, line)
			}
		}
	}
	tr := FormatTrailer(Trailer{Count: 7, BackupID: "7312345678901234567-1-0-3000028-9f3c21ab"})
	checkLineChars(t, tr, 2)
	if tr != "end\t7\t7312345678901234567-1-0-3000028-9f3c21ab" {
		t.Errorf("FormatTrailer = %q", tr)
	}
}

func TestParseLineAccepts(t *testing.T) {
	const id = "7312345678901234567-1-0-3000028-9f3c21ab"
	item := func(seq uint64, k Kind, off, n int64, p string) Line {
		return Line{Item: &Item{Seq: seq, Kind: k, Offset: off, Length: n, Path: p}}
	}
	tests := []struct {
		name string
		line string
		want Line
	}{
		{"dir", "1\td\t0\t0\tbase", item(1, Dir, 0, 0, "base")},
		{"nested dir", "2\td\t0\t0\tbase/1", item(2, Dir, 0, 0, "base/1")},
		{"file", "3\tf\t0\t8192\tbase/1/112", item(3, File, 0, 8192, "base/1/112")},
		{"file range", "5\tf\t33554432\t12582912\tbase/5/16397", item(5, File, 33554432, 12582912, "base/5/16397")},
		{"empty file", "9\tf\t0\t0\tpostmaster.opts", item(9, File, 0, 0, "postmaster.opts")},
		{"link", "6\tl\t0\t0\tpg_tblspc/16384", item(6, Link, 0, 0, "pg_tblspc/16384")},
		{"max seq", "9223372036854775807\tf\t0\t1\tx", item(1<<63-1, File, 0, 1, "x")},
		{"escaped bytes", `4\tf\t0\t1\ta\x09b\x5c\xff`, item(4, File, 0, 1, "a\tb\\\xff")},
		{"escaped slash is a plain byte", `4\tf\t0\t1\ta\x2fb`, item(4, File, 0, 1, "a/b")},
		{"dots inside names", "4\tf\t0\t1\t.a/..b/c.", item(4, File, 0, 1, ".a/..b/c.")},
		{"CRLF", "3\tf\t0\t8192\tbase/1/112\r", item(3, File, 0, 8192, "base/1/112")},
		{"trailer", "end\t7\t" + id, Line{Trailer: &Trailer{Count: 7, BackupID: id}}},
		{"empty list trailer", "end\t0\tabc", Line{Trailer: &Trailer{Count: 0, BackupID: "abc"}}},
		{"comment", "# pgbb work list", Line{}},
		{"comment that looks like an item", "#1\tf\t0\t0\tx", Line{}},
		{"empty", "", Line{}},
		{"lone CR", "\r", Line{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.line = strings.ReplaceAll(tc.line, `\t`, "\t")
			got, err := ParseLine(tc.line)
			if err != nil {
				t.Fatalf("ParseLine(%q): %v", tc.line, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseLine(%q) = %s, want %s", tc.line, show(got), show(tc.want))
			}
		})
	}
}

func show(l Line) string {
	switch {
	case l.Item != nil:
		return fmt.Sprintf("item %+v", *l.Item)
	case l.Trailer != nil:
		return fmt.Sprintf("trailer %+v", *l.Trailer)
	}
	return "nothing"
}

func TestParseLineRejects(t *testing.T) {
	// In lines, `\t` below is a TAB; other backslashes are literal.
	tests := []struct {
		rule string
		line string
		want string // part of the error message
	}{
		// field count
		{"one field", "1", "1 fields"},
		{"four fields", `1\tf\t0\t0`, "4 fields"},
		{"six fields", `1\tf\t0\t0\ta\tb`, "6 fields"},
		{"path with raw TAB is six fields", `1\tf\t0\t0\ta` + "\t" + `b`, "6 fields"},
		{"two TABs between fields", `1\t\tf\t0\t0\ta`, "6 fields"},
		{"space separated", "1 f 0 0 a", "1 fields"},
		{"trailing TAB", `1\tf\t0\t0\ta\t`, "6 fields"},
		// sequence number
		{"seq zero", `0\tf\t0\t0\ta`, "bad sequence number"},
		{"seq negative", `-1\tf\t0\t0\ta`, "bad sequence number"},
		{"seq plus sign", `+1\tf\t0\t0\ta`, "bad sequence number"},
		{"seq empty", `\tf\t0\t0\ta`, "bad sequence number"},
		{"seq not decimal", `0x1\tf\t0\t0\ta`, "bad sequence number"},
		{"seq with space", ` 1\tf\t0\t0\ta`, "bad sequence number"},
		{"seq underscore", `1_0\tf\t0\t0\ta`, "bad sequence number"},
		{"seq above int64", `18446744073709551615\tf\t0\t0\ta`, "bad sequence number"},
		{"seq overflow", `99999999999999999999\tf\t0\t0\ta`, "bad sequence number"},
		// kind
		{"kind empty", `1\t\t0\t0\ta`, "bad kind"},
		{"kind unknown", `1\tx\t0\t0\ta`, "bad kind"},
		{"kind uppercase", `1\tF\t0\t0\ta`, "bad kind"},
		{"kind two letters", `1\tff\t0\t0\ta`, "bad kind"},
		{"kind spelled out", `1\tfile\t0\t0\ta`, "bad kind"},
		// offset and length
		{"offset negative", `1\tf\t-1\t0\ta`, "bad offset"},
		{"offset empty", `1\tf\t\t0\ta`, "bad offset"},
		{"offset not a number", `1\tf\tx\t0\ta`, "bad offset"},
		{"offset overflow", `1\tf\t9223372036854775808\t0\ta`, "bad offset"},
		{"offset too large", `1\tf\t4611686018427387905\t0\ta`, "bad offset"},
		{"length negative", `1\tf\t0\t-8192\ta`, "bad length"},
		{"length empty", `1\tf\t0\t\ta`, "bad length"},
		{"length hex", `1\tf\t0\t0x10\ta`, "bad length"},
		{"length too large", `1\tf\t0\t4611686018427387905\ta`, "bad length"},
		// ranges on d and l
		{"dir with offset", `1\td\t1\t0\tbase`, "d item with a byte range"},
		{"dir with length", `1\td\t0\t1\tbase`, "d item with a byte range"},
		{"link with offset", `1\tl\t8192\t0\tpg_tblspc/1`, "l item with a byte range"},
		{"link with length", `1\tl\t0\t8192\tpg_tblspc/1`, "l item with a byte range"},
		// path rule
		{"empty path", `1\tf\t0\t0\t`, "empty path"},
		{"absolute path", `1\tf\t0\t0\t/etc/passwd`, "absolute path"},
		{"root", `1\td\t0\t0\t/`, "absolute path"},
		{"dotdot", `1\tf\t0\t0\t..`, `".." component`},
		{"dotdot first", `1\tf\t0\t0\t../x`, `".." component`},
		{"dotdot inside", `1\tf\t0\t0\tbase/../../x`, `".." component`},
		{"dotdot last", `1\td\t0\t0\tbase/..`, `".." component`},
		{"escaped dotdot", `1\tf\t0\t0\tbase/\x2e\x2e/x`, `".." component`},
		{"dot", `1\td\t0\t0\t.`, `"." component`},
		{"dot first", `1\tf\t0\t0\t./base`, `"." component`},
		{"dot inside", `1\tf\t0\t0\tbase/./1`, `"." component`},
		{"empty component", `1\tf\t0\t0\tbase//1`, "empty component"},
		{"escaped slash makes empty component", `1\tf\t0\t0\tbase/\x2f1`, "empty component"},
		{"trailing slash", `1\td\t0\t0\tbase/`, "empty component"},
		{"escaped trailing slash", `1\td\t0\t0\tbase\x2f`, "empty component"},
		{"escaped leading slash", `1\tf\t0\t0\t\x2fetc`, "absolute path"},
		{"NUL", `1\tf\t0\t0\ta\x00b`, "NUL"},
		// escapes
		{"escape q", `1\tf\t0\t0\ta\qb`, "bad escape"},
		{"escape n", `1\tf\t0\t0\ta\nb`, "bad escape"},
		{"escaped backslash C style", `1\tf\t0\t0\ta\\b`, "bad escape"},
		{"lone backslash at end", `1\tf\t0\t0\ta\`, "bad escape"},
		{"escape x with one digit at end", `1\tf\t0\t0\ta\x4`, "bad escape"},
		{"escape x with one digit inside", `1\tf\t0\t0\t\x4/b`, "bad escape"},
		{"escape x with no digits", `1\tf\t0\t0\ta\x`, "bad escape"},
		{"escape xZZ", `1\tf\t0\t0\ta\xZZ`, "bad escape"},
		{"escape x with sign", `1\tf\t0\t0\ta\x+f`, "bad escape"},
		{"escape x with underscore", `1\tf\t0\t0\ta\x_f`, "bad escape"},
		{"escape x with space", `1\tf\t0\t0\ta\x f`, "bad escape"},
		{"escape X uppercase", `1\tf\t0\t0\ta\X41`, "bad escape"},
		{"escape u", `1\tf\t0\t0\ta\u0041`, "bad escape"},
		{"escape octal", `1\tf\t0\t0\ta\101`, "bad escape"},
		// trailer
		{"trailer two fields", `end\t7`, "trailer has 2 fields"},
		{"trailer four fields", `end\t7\tabc\tx`, "trailer has 4 fields"},
		{"trailer alone", `end`, "trailer has 1 fields"},
		{"trailer count empty", `end\t\tabc`, "bad item count"},
		{"trailer count negative", `end\t-1\tabc`, "bad item count"},
		{"trailer count plus", `end\t+1\tabc`, "bad item count"},
		{"trailer count hex", `end\t0x7\tabc`, "bad item count"},
		{"trailer count overflow", `end\t18446744073709551616\tabc`, "bad item count"},
		{"trailer count above int64", `end\t9223372036854775808\tabc`, "bad item count"},
		{"backup id empty", `end\t7\t`, "bad backup id"},
		{"backup id underscore", `end\t7\tabc_def`, "bad backup id"},
		{"backup id space", `end\t7\tabc def`, "bad backup id"},
		{"backup id slash", `end\t7\t../x`, "bad backup id"},
		{"backup id dot", `end\t7\t1.2`, "bad backup id"},
		{"backup id non ASCII", "end\t7\tabc\xc3\xa9", "bad backup id"},
		{"backup id with newline", "end\t7\tabc\ndef", "bad backup id"},
		{"backup id with CR inside", "end\t7\tabc\rdef", "bad backup id"},
		{"trailer keyword uppercase", `END\t7\tabc`, "3 fields"},
	}
	for _, tc := range tests {
		t.Run(tc.rule, func(t *testing.T) {
			line := strings.ReplaceAll(tc.line, `\t`, "\t")
			l, err := ParseLine(line)
			if err == nil {
				t.Fatalf("ParseLine(%q) = %s, want an error", line, show(l))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseLine(%q) error %q does not mention %q", line, err, tc.want)
			}
			if l.Item != nil || l.Trailer != nil {
				t.Fatalf("ParseLine(%q) returned %s with its error", line, show(l))
			}
		})
	}
}

func TestUnescapePathRejects(t *testing.T) {
	for _, s := range []string{`\`, `\x`, `\x0`, `\x0g`, `\q00`, `a\\`, `\xZZ`, `\x-1`, `\x 1`} {
		if got, err := UnescapePath(s); err == nil {
			t.Errorf("UnescapePath(%q) = %q, want an error", s, got)
		}
	}
}

const example = "1\td\t0\t0\tbase\n" +
	"2\td\t0\t0\tbase/1\n" +
	"3\tf\t0\t8192\tbase/1/112\n" +
	"4\tf\t0\t33554432\tbase/5/16397\n" +
	"5\tf\t33554432\t12582912\tbase/5/16397\n" +
	"6\tl\t0\t0\tpg_tblspc/16384\n" +
	"7\tf\t0\t1264\tPG_VERSION\n" +
	"end\t7\t7312345678901234567-1-0-3000028-9f3c21ab\n"

func readAll(t *testing.T, in string) ([]Line, error) {
	t.Helper()
	rd := NewReader(strings.NewReader(in), "stdin")
	var out []Line
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("reader does not stop")
		}
		l, err := rd.Next()
		if err != nil {
			return out, err
		}
		if l.Item == nil && l.Trailer == nil {
			t.Fatalf("Next returned an empty line")
		}
		out = append(out, l)
	}
}

func TestReaderExample(t *testing.T) {
	got, err := readAll(t, example)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	want := []Item{
		{Seq: 1, Kind: Dir, Offset: 0, Length: 0, Path: "base"},
		{Seq: 2, Kind: Dir, Offset: 0, Length: 0, Path: "base/1"},
		{Seq: 3, Kind: File, Offset: 0, Length: 8192, Path: "base/1/112"},
		{Seq: 4, Kind: File, Offset: 0, Length: 33554432, Path: "base/5/16397"},
		{Seq: 5, Kind: File, Offset: 33554432, Length: 12582912, Path: "base/5/16397"},
		{Seq: 6, Kind: Link, Offset: 0, Length: 0, Path: "pg_tblspc/16384"},
		{Seq: 7, Kind: File, Offset: 0, Length: 1264, Path: "PG_VERSION"},
	}
	if len(got) != len(want)+1 {
		t.Fatalf("got %d lines, want %d", len(got), len(want)+1)
	}
	for i, w := range want {
		if got[i].Item == nil || !reflect.DeepEqual(*got[i].Item, w) {
			t.Errorf("line %d = %s, want %+v", i+1, show(got[i]), w)
		}
	}
	if tr := got[len(want)].Trailer; tr == nil || *tr != (Trailer{7, "7312345678901234567-1-0-3000028-9f3c21ab"}) {
		t.Errorf("trailer = %s", show(got[len(want)]))
	}

	// Formatting the parsed lines gives back the example byte for byte.
	var b strings.Builder
	for _, l := range got {
		if l.Item != nil {
			b.WriteString(FormatItem(*l.Item))
		} else {
			b.WriteString(FormatTrailer(*l.Trailer))
		}
		b.WriteByte('\n')
	}
	if b.String() != example {
		t.Errorf("formatted list differs from the example:\n%s", b.String())
	}
}

func TestReaderSkipsCommentsAndEmptyLines(t *testing.T) {
	plain, err := readAll(t, example)
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(example, "\n")
	var b strings.Builder
	b.WriteString("# pgbb work list\n\n")
	for i, l := range lines {
		b.WriteString(l)
		switch i % 3 {
		case 0:
			b.WriteString("\n")
		case 1:
			b.WriteString("#\tnot\ta\tline\n")
		case 2:
			b.WriteString("\r\n# 99\tf\t0\t0\t/etc/passwd\n\n\n")
		}
	}
	b.WriteString("# the end\n")
	got, err := readAll(t, b.String())
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	if !reflect.DeepEqual(got, plain) {
		t.Fatalf("with comments: %d lines, without: %d", len(got), len(plain))
	}

	// Only comments and empty lines: no lines, clean end.
	got, err = readAll(t, "# nothing\n\n#\n")
	if !errors.Is(err, io.EOF) || len(got) != 0 {
		t.Fatalf("comments only: %d lines, %v", len(got), err)
	}
	got, err = readAll(t, "")
	if !errors.Is(err, io.EOF) || len(got) != 0 {
		t.Fatalf("empty input: %d lines, %v", len(got), err)
	}
}

func TestReaderSplitAtAnyLineBoundary(t *testing.T) {
	all, _ := readAll(t, example)
	lines := strings.SplitAfter(example, "\n")
	for cut := 0; cut <= len(lines); cut++ {
		a, errA := readAll(t, strings.Join(lines[:cut], ""))
		b, errB := readAll(t, strings.Join(lines[cut:], ""))
		if !errors.Is(errA, io.EOF) || !errors.Is(errB, io.EOF) {
			t.Fatalf("cut %d: %v, %v", cut, errA, errB)
		}
		if !reflect.DeepEqual(append(a, b...), all) {
			t.Fatalf("cut %d: parts do not add up to the list", cut)
		}
	}
}

func TestReaderErrorNamesLineNumber(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lines int // lines returned before the error
		want  string
	}{
		{"third line", "1\td\t0\t0\tbase\n2\td\t0\t0\tbase/1\n3\tq\t0\t0\tx\n4\td\t0\t0\ty\n", 2, "stdin: line 3: bad kind"},
		{"first line", "0\td\t0\t0\tbase\n", 0, "stdin: line 1: bad sequence number"},
		{"comments count as lines", "# c\n\n1\td\t0\t0\tbase\n#\n\n3\tf\t0\t0\t/abs\n", 1, "stdin: line 6: absolute path"},
		{"CRLF lines count once", "1\td\t0\t0\tbase\r\n\r\n3\tf\t-1\t0\tx\r\n", 1, "stdin: line 3: bad offset"},
		{"bad trailer", example[:strings.Index(example, "end")] + "end\t7\tbad id\n", 7, "stdin: line 8: bad backup id"},
		{"bad escape at line 12", strings.Repeat("\n", 11) + `1	f	0	0	a\q` + "\n", 0, `stdin: line 12: bad escape`},
		{"last line without newline", "1\td\t0\t0\tbase\n2\tf\t0\t0\t..", 1, `stdin: line 2: cut short`},
		{"line too long", "1\td\t0\t0\tbase\n1\tf\t0\t0\t" + strings.Repeat("a", 2<<20) + "\n", 1, "stdin: line 2: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, tc.in)
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("err = %v, want an error", err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %q, want prefix %q", err, tc.want)
			}
			if len(got) != tc.lines {
				t.Fatalf("%d lines before the error, want %d", len(got), tc.lines)
			}
		})
	}
}

// docs/worklist.md: escapes are \xHH with lowercase hex digits only, so a path has one spelling.
func TestUppercaseHexEscapeIsRejected(t *testing.T) {
	line := "1\tf\t0\t0\ta\\x5Cb"
	if l, err := ParseLine(line); err == nil {
		t.Fatalf("ParseLine(%q) = %s, want a bad escape error", line, show(l))
	}
}

// docs/worklist.md: every line ends with a newline, so a list cut inside its last line is an error.
func TestUnterminatedLastLineIsRejected(t *testing.T) {
	// "5\tf\t0\t8192\tbase/1/112\n" cut inside the path: item 5 becomes another file.
	in := "4\tf\t0\t8192\tbase/1/111\n5\tf\t0\t8192\tbase/1/11"
	got, err := readAll(t, in)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read %d lines then %v, want an error naming line 2", len(got), err)
	}
}

func FuzzParseLine(f *testing.F) {
	for _, l := range strings.Split(example, "\n") {
		f.Add(l)
	}
	for _, l := range []string{
		`1	f	0	1	a\x09b\x5c\xff`, "1\tf\t0\t0\ta\x01\xfe", "3\tf\t0\t8192\tbase/1/112\r", "#x", "",
		`1	f	0	0	a\x4`, "end\t0\ta", "1\td\t+0\t-0\tx", "1\tf\t0\t0\tbase/../x", "1\tf\t0\t0\tA\\x5C",
		"8\th\t10\t0+2,7+1\t0\tbase/5/16384", "9\tr\t0\t16384\t8192\tbase/5/16384_vm.1", "10\tt\t57344\t8192\t24576\tglobal/1262",
	} {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLine(s)
		if err != nil {
			if l.Item != nil || l.Trailer != nil {
				t.Fatalf("ParseLine(%q) returned a value with error %v", s, err)
			}
			return
		}
		var line string
		switch {
		case l.Item != nil && l.Trailer != nil:
			t.Fatalf("ParseLine(%q) returned an item and a trailer", s)
		case l.Item != nil:
			it := *l.Item
			if it.Seq == 0 || it.Offset < 0 || it.Length < 0 || (it.Kind != File && it.Kind != Part && it.Kind != Dir && it.Kind != Link && !it.Incremental()) {
				t.Fatalf("ParseLine(%q) accepted %+v", s, it)
			}
			if (it.Kind == Part || it.Kind == MoreRun || it.Kind == LastRun) && it.Length == 0 {
				t.Fatalf("ParseLine(%q) accepted an empty range %+v", s, it)
			}
			if off, length := it.StoredRange(); it.Incremental() && (off%8192 != 0 || (it.Kind != Header && (off == 0 || length%8192 != 0))) {
				t.Fatalf("ParseLine(%q) accepted a run off the block grid %+v", s, it)
			}
			if !it.Incremental() && it.Kind != File && it.Kind != Part && (it.Offset != 0 || it.Length != 0) {
				t.Fatalf("ParseLine(%q) accepted a range on %+v", s, it)
			}
			if err := CheckPath(it.Path); err != nil {
				t.Fatalf("ParseLine(%q) accepted path %q: %v", s, it.Path, err)
			}
			line = FormatItem(it)
			if it.Incremental() {
				checkLineChars(t, line, 5)
			} else {
				checkLineChars(t, line, 4)
			}
		case l.Trailer != nil:
			if !backupid.Valid(l.Trailer.BackupID) {
				t.Fatalf("ParseLine(%q) accepted backup id %q", s, l.Trailer.BackupID)
			}
			line = FormatTrailer(*l.Trailer)
			checkLineChars(t, line, 2)
		default:
			return // comment or empty line
		}
		l2, err := ParseLine(line)
		if err != nil {
			t.Fatalf("ParseLine(%q) accepted, but its formatted line %q: %v", s, line, err)
		}
		if !reflect.DeepEqual(l, l2) {
			t.Fatalf("ParseLine(%q) = %s, formatted %q parses to %s", s, show(l), line, show(l2))
		}
		// Formatting is canonical: formatting the re-parsed value gives the same line.
		var again string
		if l2.Item != nil {
			again = FormatItem(*l2.Item)
		} else {
			again = FormatTrailer(*l2.Trailer)
		}
		if again != line {
			t.Fatalf("format not stable: %q then %q", line, again)
		}
		// The line read through a Reader gives the same value.
		rd := NewReader(strings.NewReader(line+"\n"), "fuzz")
		l3, err := rd.Next()
		if err != nil || !reflect.DeepEqual(l, l3) {
			t.Fatalf("Reader on %q: %s, %v", line, show(l3), err)
		}
		if _, err := rd.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("Reader on %q: second Next: %v", line, err)
		}
	})
}

func TestPartItemsCarryARangeThatIsNotTheLast(t *testing.T) {
	l, err := ParseLine("7\tp\t0\t33554432\tbase/5/16397")
	if err != nil || l.Item.Kind != Part || l.Item.Length != 33554432 {
		t.Fatalf("%+v %v", l.Item, err)
	}
	if FormatItem(*l.Item) != "7\tp\t0\t33554432\tbase/5/16397" {
		t.Fatalf("format %q", FormatItem(*l.Item))
	}
	if _, err := ParseLine("7\tp\t0\t0\tbase/5/16397"); err == nil || !strings.Contains(err.Error(), "empty range") {
		t.Fatalf("empty p range accepted: %v", err)
	}
}

// Names that are not valid in any particular encoding travel as their bytes: a Latin-1 name, one in a
// directory with such a name, and valid UTF-8, each through a line and a Reader.
func TestItemRoundTripNamesAreBytes(t *testing.T) {
	var list strings.Builder
	var want []Item
	for i, p := range []string{"caf\xe9.conf", "d\xe9j\xe0/r\xe9sum\xe9", "na\xc3\xafve", "d\xe9j\xe0/back\\slash\ttab"} {
		it := Item{Seq: uint64(i + 1), Kind: File, Length: 42, Path: p}
		line := FormatItem(it)
		checkLineChars(t, line, 4)
		list.WriteString(line + "\n")
		want = append(want, it)
	}
	rd := NewReader(strings.NewReader(list.String()), "list")
	for _, w := range want {
		l, err := rd.Next()
		if err != nil || l.Item == nil || !reflect.DeepEqual(*l.Item, w) {
			t.Fatalf("read %+v, %v; want %+v", l.Item, err, w)
		}
	}
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("after the items: %v", err)
	}
}

// The items of an incremental file (docs/worklist.md, "Version 2"): the document's example parses, gives
// the stored ranges it describes, and formats back to itself.
func TestIncrementalItems(t *testing.T) {
	lines := []string{
		"8\th\t10\t0+2,7+1\t0\tbase/5/16384",
		"9\tr\t0\t16384\t8192\tbase/5/16384",
		"10\tt\t57344\t8192\t24576\tbase/5/16384",
	}
	want := []struct {
		kind        Kind
		off, length int64
		final       bool
	}{{Header, 0, 8192, false}, {MoreRun, 8192, 16384, false}, {LastRun, 24576, 8192, true}}
	for i, s := range lines {
		l, err := ParseLine(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		it := *l.Item
		off, length := it.StoredRange()
		if it.Kind != want[i].kind || off != want[i].off || length != want[i].length || it.Final() != want[i].final {
			t.Fatalf("%q: %c %d+%d final %v, want %+v", s, it.Kind, off, length, it.Final(), want[i])
		}
		if it.StoredPath() != "base/5/INCREMENTAL.16384" {
			t.Fatalf("%q: stored path %q", s, it.StoredPath())
		}
		if FormatItem(it) != s {
			t.Fatalf("%q formats as %q", s, FormatItem(it))
		}
	}
	h, _ := ParseLine(lines[0])
	if !reflect.DeepEqual(h.Item.Blocks(), []uint32{0, 1, 7}) || h.Item.Trunc != 10 {
		t.Fatalf("blocks %v trunc %d", h.Item.Blocks(), h.Item.Trunc)
	}
	empty, err := ParseLine("3\th\t4\t-\t0\tglobal/1262")
	if err != nil || !empty.Item.Final() {
		t.Fatalf("empty header: %+v %v", empty.Item, err)
	}
	if _, length := empty.Item.StoredRange(); length != 12 {
		t.Fatalf("empty header is %d bytes, want 12", length)
	}
	for _, bad := range []string{
		"8\th\t10\t2+1,1+1\t0\tbase/5/16384",  // not ascending
		"8\th\t10\t0+0\t0\tbase/5/16384",      // empty run
		"8\th\t10\t0+2\t1\tbase/5/16384",      // destination on h
		"8\th\t10\t0+2\t0\tbase/5/PG_VERSION", // not a relation file
		"8\th\t10\t0+2\t0\t16384",             // not in a directory
		"9\tr\t0\t0\t8192\tbase/5/16384",      // empty run
		"9\tr\t100\t8192\t8192\tbase/5/16384", // not whole blocks
		"9\tr\t0\t8192\t0\tbase/5/16384",      // destination inside the header
		"9\tf\t0\t8192\t8192\tbase/5/16384",   // six fields on a version 1 kind
		"9\tr\t0\t8192\tbase/5/16384",         // five fields on a version 2 kind
	} {
		if _, err := ParseLine(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A scattered run list travels as a bitmap, which bounds the line: every other block of a 1 GiB segment
// fits, and reads back as the same runs.
func TestRunListBitmap(t *testing.T) {
	var runs []Run
	for b := uint32(0); b < 131072; b += 2 {
		runs = append(runs, Run{First: b, Count: 1})
	}
	it := Item{Seq: 1, Kind: Header, Trunc: 131072, Runs: runs, Path: "base/5/16384"}
	line := FormatItem(it)
	if len(line) > 34000 || !strings.Contains(line, "\tx5555") {
		t.Fatalf("line of %d bytes, starting %q", len(line), line[:40])
	}
	l, err := ParseLine(line)
	if err != nil || !reflect.DeepEqual(*l.Item, it) {
		t.Fatalf("%v; runs differ: %d", err, len(l.Item.Runs))
	}
	// few runs stay runs
	if got := FormatRuns([]Run{{3, 4}, {100000, 2}}); got != "3+4,100000+2" {
		t.Fatalf("FormatRuns = %q", got)
	}
	for _, bad := range []string{"x", "x00", "xAB", "xq1"} {
		if _, err := parseRuns(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
