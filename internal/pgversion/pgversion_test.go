package pgversion

import "testing"

// The table is the one home of the version rules: every supported major has a row with every field set,
// in order, and the lookups agree with each other.
func TestEveryMajorHasACompleteRow(t *testing.T) {
	want := []int{13, 14, 15, 16, 17, 18}
	got := Supported()
	if len(got) != len(want) {
		t.Fatalf("supported %v, want %v", got, want)
	}
	for i, major := range want {
		if got[i] != major {
			t.Fatalf("supported %v, want %v", got, want)
		}
		m, err := ForServer(major*10000 + 3)
		if err != nil || m.Major != major {
			t.Fatalf("ForServer(%d): %+v %v", major*10000+3, m, err)
		}
		if m.WALPageMagic>>8 != 0xD1 || m.ControlVersion == 0 || m.ControlCRCOffset < 288 || m.ManifestVersion == 0 || len(m.WALDirs) == 0 || m.WALDirs[0] != "archive_status" {
			t.Errorf("PostgreSQL %d: incomplete row %+v", major, m)
		}
		if back, err := ForPageMagic(m.WALPageMagic); err != nil || back.Major != major {
			t.Errorf("PostgreSQL %d: page magic 0x%04X maps to %d (%v)", major, m.WALPageMagic, back.Major, err)
		}
		if off, err := ControlCRCOffset(m.ControlVersion); err != nil || off != m.ControlCRCOffset {
			t.Errorf("PostgreSQL %d: pg_control %d CRC offset %d (%v), want %d", major, m.ControlVersion, off, err, m.ControlCRCOffset)
		}
	}
}

// The facts that differ between majors, as their branches have them.
func TestRulesThatDifferBetweenMajors(t *testing.T) {
	cases := []struct {
		major             int
		start, stop       string
		manifest          int
		summaries, statsT bool
	}{
		{13, "pg_start_backup(text, boolean, boolean)", "pg_stop_backup(boolean, boolean)", 1, false, true},
		{14, "pg_start_backup(text, boolean, boolean)", "pg_stop_backup(boolean, boolean)", 1, false, true},
		{15, "pg_backup_start(text, boolean)", "pg_backup_stop(boolean)", 1, false, false},
		{16, "pg_backup_start(text, boolean)", "pg_backup_stop(boolean)", 1, false, false},
		{17, "pg_backup_start(text, boolean)", "pg_backup_stop(boolean)", 2, true, false},
		{18, "pg_backup_start(text, boolean)", "pg_backup_stop(boolean)", 2, true, false},
	}
	for _, c := range cases {
		m, err := ForMajor(c.major)
		if err != nil {
			t.Fatal(err)
		}
		if m.StartFunction() != c.start || m.StopFunction() != c.stop || m.ManifestVersion != c.manifest ||
			(len(m.WALDirs) == 2) != c.summaries || m.StatsTempDirSetting != c.statsT {
			t.Errorf("PostgreSQL %d: %+v", c.major, m)
		}
	}
}

func TestUnsupportedMajorsAreRefusedByName(t *testing.T) {
	for _, v := range []int{120010, 190000, 0} {
		if _, err := ForServer(v); err == nil {
			t.Errorf("ForServer(%d) accepted", v)
		}
	}
	if _, err := ControlCRCOffset(1201); err == nil {
		t.Error("pg_control version 1201 accepted")
	}
	if _, err := ForPageMagic(0xD101); err == nil {
		t.Error("page magic 0xD101 accepted")
	}
}
