package datadir

import (
	"testing"

	"github.com/pgbb/pgbb/internal/pgversion"
)

func TestClassifyMirrorsBasebackupExclusions(t *testing.T) {
	r := NewRules(mustMajor(t, 15), 202209061, "")
	db := map[string]bool{"16384": true, "16384_init": true, "16384_fsm": true, "16390": true, "t3_16400": true}
	cases := []struct {
		dir, name string
		isDir     bool
		want      Decision
	}{
		{"", "pg_wal", true, EmptyDir},
		{"", "pg_stat_tmp", true, EmptyDir},
		{"", "pg_replslot", true, EmptyDir},
		{"", "pg_dynshmem", true, EmptyDir},
		{"", "pg_notify", true, EmptyDir},
		{"", "pg_serial", true, EmptyDir},
		{"", "pg_snapshots", true, EmptyDir},
		{"", "pg_subtrans", true, EmptyDir},
		{"", "pg_xact", true, Copy},
		{"", "pg_stat", true, Copy},
		{"", "postmaster.pid", false, Skip},
		{"", "postmaster.opts", false, Skip},
		{"", "backup_label", false, Skip},
		{"", "tablespace_map", false, Skip},
		{"", "backup_manifest", false, Skip},
		{"", "postgresql.auto.conf.tmp", false, Skip},
		{"", "current_logfiles.tmp", false, Skip},
		{"", "postgresql.auto.conf", false, Copy},
		{"global", "pg_control", false, Skip},
		{"global", "pg_internal.init", false, Skip},
		{"base/5", "pg_internal.init.123", false, Skip},
		{"base", "pgsql_tmp", true, Skip},
		{"base/pgsql_tmp", "pgsql_tmp123.0", false, Skip},
		{"base/5", "t3_16400", false, Skip},
		{"base/5", "t3_16400_fsm.1", false, Skip},
		{"base/5", "16384", false, Skip},
		{"base/5", "16384_fsm", false, Skip},
		{"base/5", "16384_init", false, Copy},
		{"base/5", "16390", false, Copy},
		{"global", "16384", false, Copy}, // global is not a database directory
		{"pg_tblspc", "16385", true, TablespaceLink},
		{"pg_tblspc/16385", "PG_15_202209061", true, Copy},
		{"pg_tblspc/16385", "PG_14_202107181", true, Skip},
		{"pg_tblspc/16385/PG_15_202209061/5", "16384", false, Skip},
		{"pg_tblspc/16385/PG_15_202209061/5", "t9_1", false, Skip},
		{"log", "postgresql.log", false, Copy},
	}
	for _, c := range cases {
		if got, why := r.Classify(c.dir, c.name, c.isDir, db); got != c.want {
			t.Errorf("%s/%s: got %d (%s), want %d", c.dir, c.name, got, why, c.want)
		}
	}
}

func TestParseRelationFileName(t *testing.T) {
	for name, want := range map[string]RelationFile{
		"16384":        {Number: "16384"},
		"16384_vm":     {Number: "16384", Fork: "vm"},
		"16384.12":     {Number: "16384", Segment: "12"},
		"16384_init.1": {Number: "16384", Fork: "init", Segment: "1"},
	} {
		if got, ok := ParseRelationFileName(name); !ok || got != want {
			t.Errorf("%s: %+v %v", name, got, ok)
		}
	}
	for _, bad := range []string{"", "PG_VERSION", "16384_foo", "16384.", "t1_2", "16384_vm_init"} {
		if _, ok := ParseRelationFileName(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestHasPageChecksumsMirrorsIsChecksummedFile(t *testing.T) {
	for path, want := range map[string]bool{
		"base/5/16384":                         true,
		"base/5/16384_fsm":                     true,
		"base/5/16384.3":                       true,
		"global/1262":                          true,
		"pg_tblspc/16385/PG_15_202209061/5/77": true,
		"global/pg_control":                    false,
		"global/pg_filenode.map":               false,
		"base/5/pg_filenode.map":               false,
		"base/5/PG_VERSION":                    false,
		"base/5/pg_internal.init":              false,
		"pg_xact/0000":                         false,
		"PG_VERSION":                           false,
		"pg_multixact/offsets/0000":            false,
	} {
		if got := HasPageChecksums(path); got != want {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	if SegmentNumber("16384.12") != 12 || SegmentNumber("16384") != 0 || SegmentNumber("16384_vm.1") != 1 {
		t.Fatal("segment numbers")
	}
}

func mustMajor(t *testing.T, major int) pgversion.Major {
	t.Helper()
	m, err := pgversion.ForMajor(major)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// What differs between majors: pg_wal/summaries and .DS_Store from 17, stats_temp_directory in 13 and 14.
func TestRulesFollowTheMajor(t *testing.T) {
	r13 := NewRules(mustMajor(t, 13), 202007201, "stats")
	r17 := NewRules(mustMajor(t, 17), 202406281, "")
	if d, _ := r13.Classify("", "stats", true, nil); d != EmptyDir {
		t.Errorf("13: stats_temp_directory is %v, want emptied", d)
	}
	if d, _ := r17.Classify("", "stats", true, nil); d != Copy {
		t.Errorf("17: a directory named stats is %v, want copied", d)
	}
	if d, _ := r13.Classify("base/1", ".DS_Store", false, nil); d != Copy {
		t.Errorf("13: .DS_Store is %v, want copied", d)
	}
	if d, _ := r17.Classify("base/1", ".DS_Store", false, nil); d != Skip {
		t.Errorf("17: .DS_Store is %v, want skipped", d)
	}
	if got := r13.WALDirs(); len(got) != 1 || got[0] != "pg_wal/archive_status" {
		t.Errorf("13: WAL dirs %v", got)
	}
	if got := r17.WALDirs(); len(got) != 2 || got[1] != "pg_wal/summaries" {
		t.Errorf("17: WAL dirs %v", got)
	}
}

// Names are bytes: CheckPath takes any bytes but NUL and '/' in a component (a Latin-1 name, invalid UTF-8,
// control characters), and still refuses what could leave the directory or name it twice.
func TestCheckPathNamesAreBytes(t *testing.T) {
	for _, p := range []string{"caf\xe9.conf", "d\xe9j\xe0/r\xe9sum\xe9", "na\xc3\xafve", "\xff", "a\tb\\c\n", "..\xe9", ".\x80", "a/...", "x/\xc0\xae\xc0\xae/y"} {
		if err := CheckPath(p); err != nil {
			t.Errorf("CheckPath(%q): %v", p, err)
		}
	}
	for _, p := range []string{"", "/etc/passwd", "/", "a//b", "a/", "..", ".", "a/../b", "\xe9/../x", "\xe9/./x", "caf\xe9\x00", "a/\x00/b"} {
		if err := CheckPath(p); err == nil {
			t.Errorf("CheckPath(%q) accepted", p)
		}
	}
}
