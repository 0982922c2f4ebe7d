package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The expected text is the shape of a manifest written by PostgreSQL 15's pg_basebackup on this machine,
// with its checksum recomputed over the preceding bytes.
func TestBuildMatchesServerFormat(t *testing.T) {
	mod := time.Date(2026, 11, 25, 8, 42, 58, 0, time.UTC)
	got := Build(1, 0, []File{
		{Path: "backup_label", Size: 225, Modified: mod, CRC32C: 0xecea6ed2},
		{Path: "PG_VERSION", Size: 3, Modified: mod, CRC32C: 0x2247748a},
	}, []WALRange{{Timeline: 1, Start: 0x3000028, End: 0x3000100}})
	want := `{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "backup_label", "Size": 225, "Last-Modified": "2026-11-25 08:42:58 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "d26eeaec" },
{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-25 08:42:58 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "8a744722" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000100" }
],
`
	if !strings.HasPrefix(string(got), want) {
		t.Fatalf("got\n%s", got)
	}
	sum := sha256.Sum256([]byte(want))
	if tail := string(got[len(want):]); tail != `"Manifest-Checksum": "`+hex.EncodeToString(sum[:])+"\"}\n" {
		t.Fatalf("checksum line %q", tail)
	}
}

func TestBuildEscapesAndEncodesPaths(t *testing.T) {
	got := Build(2, 77, []File{
		{Path: "a\"b\\c\td\x01"},
		{Path: "bad\xffname"},
	}, nil)
	var v map[string]any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, got)
	}
	files := v["Files"].([]any)
	if p := files[0].(map[string]any)["Path"]; p != "a\"b\\c\td\x01" {
		t.Fatalf("path %q", p)
	}
	if p := files[1].(map[string]any)["Encoded-Path"]; p != hex.EncodeToString([]byte("bad\xffname")) {
		t.Fatalf("encoded path %q", p)
	}
	if !bytes.Contains(got, []byte("\"System-Identifier\": 77,\n")) {
		t.Fatal("version 2 lacks System-Identifier")
	}
}
