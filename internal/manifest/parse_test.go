package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// withChecksum completes a manifest body (everything up to and including the newline after the last "],")
// with its Manifest-Checksum line, as backup_manifest.c does.
func withChecksum(body string) []byte {
	sum := sha256.Sum256([]byte(body))
	return []byte(body + `"Manifest-Checksum": "` + hex.EncodeToString(sum[:]) + "\"}\n")
}

// fixChecksum replaces the last line of b with a Manifest-Checksum line that is right for the lines before
// it, so that a test can damage a manifest's body without only testing the checksum.
func fixChecksum(b []byte) []byte {
	i := bytes.LastIndexByte(bytes.TrimSuffix(b, []byte("\n")), '\n')
	if i < 0 {
		return b
	}
	return withChecksum(string(b[:i+1]))
}

func files(entries []Entry) []File {
	out := make([]File, len(entries))
	for i, e := range entries {
		out[i] = e.File
	}
	return out
}

func TestParseRoundTripsBuild(t *testing.T) {
	mod := time.Date(2026, 11, 25, 8, 42, 58, 0, time.UTC)
	cases := []struct {
		version  int
		systemID uint64
		files    []File
		ranges   []WALRange
	}{
		{1, 0, nil, []WALRange{{Timeline: 1, Start: 0x3000028, End: 0x3000100}}},
		{1, 0, []File{
			{Path: "backup_label", Size: 225, Modified: mod, CRC32C: 0xecea6ed2},
			{Path: "base/5/16384", Size: 8192 * 1000, Modified: mod.Add(-time.Hour), CRC32C: 0},
			{Path: "pg_tblspc/16385/PG_15_202209061/5/16390", Size: 0, Modified: mod, CRC32C: 0xffffffff},
		}, []WALRange{{Timeline: 1, Start: 0x3000028, End: 0x3000100}, {Timeline: 2, Start: 0x3000100, End: 0x1_0000_0000}}},
		{2, 7255098937251508287, []File{
			{Path: "a\"b\\c\td\x01\x7f é", Size: 1, Modified: mod, CRC32C: 0x12345678},
			{Path: "bad\xffname", Size: 2, Modified: time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), CRC32C: 1},
			{Path: "global/pg_control", Size: 8192, Modified: mod, CRC32C: 0x80000000},
		}, []WALRange{{Timeline: 4294967295, Start: 0xFFFFFFFF_FFFFFFFF, End: 0xFFFFFFFF_FFFFFFFF}}},
		{2, 0, nil, nil},
	}
	for i, c := range cases {
		b := Build(c.version, c.systemID, c.files, c.ranges)
		m, err := Parse(b)
		if err != nil {
			t.Fatalf("case %d: %v\n%s", i, err, b)
		}
		if m.Version != c.version || m.SystemID != c.systemID {
			t.Errorf("case %d: version %d system %d", i, m.Version, m.SystemID)
		}
		if len(c.files) > 0 && !reflect.DeepEqual(files(m.Files), c.files) {
			t.Errorf("case %d: files\n%+v\nwant\n%+v", i, files(m.Files), c.files)
		}
		if len(c.files) == 0 && len(m.Files) != 0 {
			t.Errorf("case %d: %d files", i, len(m.Files))
		}
		if !reflect.DeepEqual(m.WALRanges, c.ranges) && (len(c.ranges) > 0 || len(m.WALRanges) > 0) {
			t.Errorf("case %d: ranges %+v", i, m.WALRanges)
		}
		for _, e := range m.Files {
			want := []byte{byte(e.CRC32C), byte(e.CRC32C >> 8), byte(e.CRC32C >> 16), byte(e.CRC32C >> 24)}
			if e.Algorithm != "CRC32C" || !bytes.Equal(e.Checksum, want) {
				t.Errorf("case %d: %s: algorithm %s checksum %x", i, e.Path, e.Algorithm, e.Checksum)
			}
		}
	}
}

// A manifest as pg_basebackup writes it with --manifest-checksums=SHA256 or NONE: PostgreSQL writes no
// checksum keys at all for NONE.
func TestParseOtherAlgorithms(t *testing.T) {
	sha := sha256.Sum256([]byte("15\n"))
	m, err := Parse(withChecksum(`{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-25 08:42:58 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "` + hex.EncodeToString(sha[:]) + `" },
{ "Encoded-Path": "626173652f31", "Size": 0, "Last-Modified": "2026-11-25 08:42:58 GMT" },
{ "Path": "x", "Size": 0, "Last-Modified": "2026-11-25 08:42:58 GMT", "Checksum-Algorithm": "crc32c", "Checksum": "78563412" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000100" }
],
`))
	if err != nil {
		t.Fatal(err)
	}
	got := m.Files
	if got[0].Algorithm != "SHA256" || !bytes.Equal(got[0].Checksum, sha[:]) || got[0].CRC32C != 0 {
		t.Errorf("sha256 entry %+v", got[0])
	}
	if got[1].Path != "base/1" || got[1].Algorithm != "NONE" || got[1].Checksum != nil {
		t.Errorf("encoded entry without checksum %+v", got[1])
	}
	if got[2].Algorithm != "CRC32C" || got[2].CRC32C != 0x12345678 {
		t.Errorf("lower-case algorithm name %+v", got[2])
	}
}

// Each damage must be refused with an error that says what is wrong. The checksum is recomputed after the
// damage unless the case is about the checksum.
func TestParseRejects(t *testing.T) {
	const head = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n"
	const entry = `{ "Path": "base/1/2", "Size": 3, "Last-Modified": "2026-11-25 08:42:58 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "d26eeaec" }`
	const tail = "\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }\n],\n"
	good := head + entry + tail
	if _, err := Parse(withChecksum(good)); err != nil {
		t.Fatalf("the undamaged manifest: %v", err)
	}
	entryWith := func(old, new string) string { return head + strings.Replace(entry, old, new, 1) + tail }
	cases := []struct {
		name, want string
		manifest   []byte
	}{
		{"checksum mismatch", "checksum mismatch", bytes.Replace(withChecksum(good), []byte(`"Size": 3`), []byte(`"Size": 4`), 1)},
		{"manifest checksum not hex", `"Manifest-Checksum" is not hex`, bytes.Replace(withChecksum(good), []byte(`"Manifest-Checksum": "`), []byte(`"Manifest-Checksum": "x`), 1)},
		{"cut short", "cut short", withChecksum(good)[:len(withChecksum(good))-1]},
		{"cut in the middle", "does not end", withChecksum(good)[:len(good)/2]},
		{"one line", "fewer than 2 lines", []byte("{}\n")},
		{"checksum not on the last line", "not on the last line", []byte(good + "\"Manifest-Checksum\": \"00\"\n}\n")},
		{"duplicate path", `duplicate path "base/1/2" (first on line 3)`, withChecksum(head + entry + ",\n" + entry + tail)},
		{"duplicate path through Encoded-Path", `duplicate path "base/1/2"`, withChecksum(head + entry + ",\n" + strings.Replace(entry, `"Path": "base/1/2"`, `"Encoded-Path": "626173652f312f32"`, 1) + tail)},
		{"unknown top-level key", `unknown key "Extra" at the top level`, withChecksum(strings.Replace(good, "\"Files\"", "\"Extra\": 1,\n\"Files\"", 1))},
		{"unknown file key", `unknown key "Mode" in a file entry`, withChecksum(entryWith(`"Size"`, `"Mode": 420, "Size"`))},
		{"unknown WAL range key", `unknown key "Foo" in a WAL range`, withChecksum(strings.Replace(good, `"Timeline"`, `"Foo": 1, "Timeline"`, 1))},
		{"key twice in a file", `key "Size" appears twice`, withChecksum(entryWith(`"Size": 3`, `"Size": 3, "Size": 3`))},
		{"top-level key twice", `key "Files" appears twice`, withChecksum(strings.Replace(good, "\"WAL-Ranges\"", "\"Files\": [],\n\"WAL-Ranges\"", 1))},
		{"missing size", `missing "Size" (file "base/1/2")`, withChecksum(entryWith(`"Size": 3, `, ``))},
		{"missing last modified", `missing "Last-Modified"`, withChecksum(entryWith(`"Last-Modified": "2026-11-25 08:42:58 GMT", `, ``))},
		{"missing path", `neither "Path" nor "Encoded-Path"`, withChecksum(entryWith(`"Path": "base/1/2", `, ``))},
		{"both paths", `both "Path" and "Encoded-Path"`, withChecksum(entryWith(`"Size"`, `"Encoded-Path": "61", "Size"`))},
		{"missing checksum", `missing "Checksum" for algorithm CRC32C`, withChecksum(entryWith(`, "Checksum": "d26eeaec"`, ``))},
		{"checksum without algorithm", `"Checksum" without "Checksum-Algorithm"`, withChecksum(entryWith(`"Checksum-Algorithm": "CRC32C", `, ``))},
		{"checksum with NONE", `"Checksum" with algorithm NONE`, withChecksum(entryWith(`"CRC32C"`, `"NONE"`))},
		{"unknown algorithm", `unknown checksum algorithm "MD5"`, withChecksum(entryWith(`"CRC32C"`, `"MD5"`))},
		{"checksum not hex", `"Checksum" is not hex: "d26eeaeg"`, withChecksum(entryWith(`d26eeaec`, `d26eeaeg`))},
		{"checksum of the wrong length", `"Checksum" has 6 hex digits, want 8`, withChecksum(entryWith(`d26eeaec`, `d26eea`))},
		{"encoded path of odd length", `"Encoded-Path" is not hex`, withChecksum(entryWith(`"Path": "base/1/2"`, `"Encoded-Path": "626"`))},
		{"size as a string", `"Size" is not a number`, withChecksum(entryWith(`"Size": 3`, `"Size": "3"`))},
		{"fractional size", `"Size" is 1.5, want an integer`, withChecksum(entryWith(`"Size": 3`, `"Size": 1.5`))},
		{"negative size", `"Size" is -1`, withChecksum(entryWith(`"Size": 3`, `"Size": -1`))},
		{"huge size", `"Size" is 9223372036854775808`, withChecksum(entryWith(`"Size": 3`, `"Size": 9223372036854775808`))},
		{"one-digit hour", `bad "Last-Modified"`, withChecksum(entryWith(`08:42:58`, `8:42:58`))},
		{"local time", `bad "Last-Modified"`, withChecksum(entryWith(`GMT`, `CET`))},
		{"parent path", `".." component in path "base/../x"`, withChecksum(entryWith(`base/1/2`, `base/../x`))},
		{"absolute path", `absolute path "/etc/passwd"`, withChecksum(entryWith(`base/1/2`, `/etc/passwd`))},
		{"empty component", `empty component in path "base//2"`, withChecksum(entryWith(`base/1/2`, `base//2`))},
		{"empty path", `empty path`, withChecksum(entryWith(`base/1/2`, ``))},
		{"invalid UTF-8", `invalid UTF-8`, withChecksum(entryWith(`base/1/2`, "base/\xff"))},
		{"escaped NUL", `\u0000 in a string`, withChecksum(entryWith(`base/1/2`, `base\u0000`))},
		{"lone surrogate", `lone UTF-16 surrogate`, withChecksum(entryWith(`base/1/2`, `base\ud800x`))},
		{"raw control character", `control character 0x09`, withChecksum(entryWith(`base/1/2`, "base\t"))},
		{"version 3", `manifest version 3 is not supported`, withChecksum(strings.Replace(good, "Version\": 1", "Version\": 3", 1))},
		{"version not first", `the first key is "Files"`, withChecksum("{ \"Files\": [],\n\"PostgreSQL-Backup-Manifest-Version\": 1,\n\"WAL-Ranges\": [\n],\n")},
		{"version 2 without system identifier", `missing "System-Identifier"`, withChecksum(strings.Replace(good, "Version\": 1", "Version\": 2", 1))},
		{"version 1 with system identifier", `"System-Identifier" in a version 1 manifest`, withChecksum(strings.Replace(good, "\"Files\"", "\"System-Identifier\": 5,\n\"Files\"", 1))},
		{"missing WAL-Ranges", `missing "WAL-Ranges"`, withChecksum(head + entry + "\n],\n")},
		{"lower-case LSN", `bad "Start-LSN" "0/3000a28"`, withChecksum(strings.Replace(good, "0/3000028", "0/3000a28", 1))},
		{"LSN with leading zeros", `bad "Start-LSN" "0/03000028"`, withChecksum(strings.Replace(good, "0/3000028", "0/03000028", 1))},
		{"range ends before it starts", `WAL range ends before it starts`, withChecksum(strings.Replace(good, "0/3000100", "0/3000000", 1))},
		{"timeline 0", `timeline 0`, withChecksum(strings.Replace(good, "\"Timeline\": 1", "\"Timeline\": 0", 1))},
		{"missing timeline", `missing "Timeline"`, withChecksum(strings.Replace(good, "\"Timeline\": 1, ", "", 1))},
		{"literal", `"Size" is not a number`, withChecksum(entryWith(`"Size": 3`, `"Size": null`))},
		{"trailing comma", `where a key should start`, withChecksum(entryWith(` }`, `, }`))},
		{"files not an array", `"Files" is not an array`, withChecksum(strings.Replace(good, "\"Files\": [\n"+entry+"\n]", "\"Files\": {}", 1))},
		{"too deep", `nested deeper`, withChecksum(entryWith(`"Size": 3`, `"Size": [[1]]`))},
		{"garbage after the object", `after the end of the manifest`, append(withChecksum(good)[:len(withChecksum(good))-1], []byte("\n{}\n")...)},
	}
	for _, c := range cases {
		_, err := Parse(c.manifest)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q\n%s", c.name, err, c.want, c.manifest)
		}
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	body := "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n" +
		"{ \"Path\": \"a\", \"Size\": 1, \"Last-Modified\": \"2026-11-25 08:42:58 GMT\" },\n" +
		"{ \"Path\": \"b\", \"Size\": 1 }\n],\n\"WAL-Ranges\": [\n],\n"
	_, err := Parse(withChecksum(body))
	if err == nil || err.Error() != `line 4: missing "Last-Modified" (file "b")` {
		t.Fatalf("got %v", err)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts, Build writes back into a manifest
// that parses to the same content. Each input is tried as given and with its last line replaced by the
// right Manifest-Checksum line, so that mutations reach past the checksum.
func FuzzParse(f *testing.F) {
	mod := time.Date(2026, 11, 25, 8, 42, 58, 0, time.UTC)
	f.Add(Build(1, 0, []File{{Path: "backup_label", Size: 225, Modified: mod, CRC32C: 0xecea6ed2}},
		[]WALRange{{Timeline: 1, Start: 0x3000028, End: 0x3000100}}))
	f.Add(Build(2, 77, []File{{Path: "a\"b\\c\td\x01"}, {Path: "bad\xffname", Size: 5}}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, fixChecksum(b)} {
			m, err := Parse(in)
			if err != nil {
				if m != nil {
					t.Fatalf("Parse returned a manifest with error %v", err)
				}
				continue
			}
			for _, e := range m.Files {
				if checkPath(e.Path) != nil || e.Size < 0 || len(e.Checksum) != checksumLengths[e.Algorithm] {
					t.Fatalf("accepted entry %+v", e)
				}
			}
			again := Build(m.Version, m.SystemID, files(m.Files), m.WALRanges)
			m2, err := Parse(again)
			if err != nil {
				t.Fatalf("Build of an accepted manifest does not parse: %v\n%s\nfrom\n%q", err, again, in)
			}
			if m2.Version != m.Version || m2.SystemID != m.SystemID ||
				!reflect.DeepEqual(files(m2.Files), files(m.Files)) ||
				fmt.Sprint(m2.WALRanges) != fmt.Sprint(m.WALRanges) {
				t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
			}
		}
	})
}
