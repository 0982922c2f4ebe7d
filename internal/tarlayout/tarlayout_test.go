package tarlayout

import (
	"testing"

	"github.com/pgbb/pgbb/internal/chunkstream"
)

func TestNamesFollowTheCodec(t *testing.T) {
	for _, tc := range []struct {
		codec               byte
		base, wal, ts, suff string
	}{
		{chunkstream.CodecXZ, "base.tar.xz", "pg_wal.tar.xz", "16384.tar.xz", ".tar.xz"},
		{chunkstream.CodecZstd, "base.tar.zst", "pg_wal.tar.zst", "16384.tar.zst", ".tar.zst"},
	} {
		l, err := New(tc.codec)
		if err != nil {
			t.Fatal(err)
		}
		if l.Base() != tc.base || l.WAL() != tc.wal || l.Tablespace(16384) != tc.ts || l.Suffix() != tc.suff || l.Codec() != tc.codec {
			t.Errorf("codec %d: %s %s %s %s", tc.codec, l.Base(), l.WAL(), l.Tablespace(16384), l.Suffix())
		}
	}
	if _, err := New(chunkstream.CodecNone); err == nil {
		t.Error("a tar layout without compression")
	}
}

// Place and PathOf are inverses, the WAL stays out of the manifest, and the directories below pg_wal that
// the server needs stay in base.tar.
func TestPlaceMapsPathsToArchivesAndBack(t *testing.T) {
	l, _ := New(chunkstream.CodecZstd)
	walDirs := []string{"pg_wal/archive_status", "pg_wal/summaries"}
	for _, tc := range []struct{ path, archive, member string }{
		{"base/5/16384", "base.tar.zst", "base/5/16384"},
		{"global/pg_control", "base.tar.zst", "global/pg_control"},
		{"backup_label", "base.tar.zst", "backup_label"},
		{"pg_wal", "base.tar.zst", "pg_wal"},
		{"pg_wal/archive_status", "base.tar.zst", "pg_wal/archive_status"},
		{"pg_wal/summaries", "base.tar.zst", "pg_wal/summaries"},
		{"pg_wal/000000010000000000000003", "pg_wal.tar.zst", "000000010000000000000003"},
		{"pg_wal/00000002.history", "pg_wal.tar.zst", "00000002.history"},
		{"pg_tblspc/16384/PG_15_202209061", "16384.tar.zst", "PG_15_202209061"},
		{"pg_tblspc/16384/PG_15_202209061/5/16385", "16384.tar.zst", "PG_15_202209061/5/16385"},
	} {
		a, m, err := l.Place(tc.path, walDirs)
		if err != nil || a != tc.archive || m != tc.member {
			t.Errorf("Place(%q) = %q, %q, %v; want %q, %q", tc.path, a, m, err, tc.archive, tc.member)
			continue
		}
		if back := l.PathOf(a, m); back != tc.path {
			t.Errorf("PathOf(%q, %q) = %q, want %q", a, m, back, tc.path)
		}
		if l.InManifest(a) == (a == "pg_wal.tar.zst") {
			t.Errorf("InManifest(%q) = %v", a, l.InManifest(a))
		}
		if a != "pg_wal.tar.zst" && l.ArchiveOf(tc.path) != a {
			t.Errorf("ArchiveOf(%q) = %q, want %q", tc.path, l.ArchiveOf(tc.path), a)
		}
	}
	for _, bad := range []string{"pg_tblspc/16384", "pg_tblspc/16384/", "pg_tblspc/x/y", "pg_tblspc/016384/y", "pg_tblspc/0/y"} {
		if a, m, err := l.Place(bad, walDirs); err == nil {
			t.Errorf("Place(%q) = %q, %q", bad, a, m)
		}
	}
	if p := l.PathOf("base.tar.xz", "x"); p != "" {
		t.Errorf("an archive of another codec maps to %q", p)
	}
}

func TestParseAndDetectTellArchivesApart(t *testing.T) {
	xz, _ := New(chunkstream.CodecXZ)
	for _, tc := range []struct {
		name string
		kind Kind
		oid  string
	}{
		{"base.tar.xz", Base, ""}, {"pg_wal.tar.xz", WAL, ""}, {"16384.tar.xz", Tablespace, "16384"},
		{"016384.tar.xz", NotArchive, ""}, {"0.tar.xz", NotArchive, ""}, {"base.tar.zst", NotArchive, ""},
		{"backup_manifest", NotArchive, ""}, {"x.tar.xz", NotArchive, ""},
	} {
		if k, oid := xz.Parse(tc.name); k != tc.kind || oid != tc.oid {
			t.Errorf("Parse(%q) = %v %q, want %v %q", tc.name, k, oid, tc.kind, tc.oid)
		}
	}
	if s, ok := IsArchiveName("base.tar.zst"); !ok || s != ".tar.zst" {
		t.Errorf("IsArchiveName: %q %v", s, ok)
	}
	if _, ok := IsArchiveName("base.tar.gz"); ok {
		t.Error("a .tar.gz taken for an archive pgbb writes")
	}
	has := map[string]bool{"base.tar.zst": true, "pg_wal.tar.zst": true}
	if l, ok := Detect(func(n string) bool { return has[n] }); !ok || l.Codec() != chunkstream.CodecZstd {
		t.Errorf("Detect: %v %v", l, ok)
	}
	if _, ok := Detect(func(n string) bool { return n == "base" }); ok {
		t.Error("a plain backup detected as tar")
	}
}
