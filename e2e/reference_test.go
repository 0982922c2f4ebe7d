package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// Issue 14, --reference OLD (docs/incremental.md, section 5): on 15 and 18, a full pgbb backup, then write
// load, then a backup against it. Between the two a byte is flipped in OLD's copy of a table nobody writes.
// The new backup must send less than the whole, take the rest from OLD, fetch the flipped page again (it
// holds the source's byte, not OLD's), leave OLD exactly as it was, pass the stock verifier and the restore
// oracle. What --reference must not take it refuses (exit 2): a backup of another cluster, a directory that
// is not a complete plain backup, a DEST inside OLD, -F tar.
func TestReferenceBackup(t *testing.T) {
	// the 15 cluster's backup, which the 18 cluster must refuse: what the check reads of it, kept past
	// the 15 subtest
	oldOther := t.TempDir()
	for _, major := range []int{15, 18} {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			s := newSourceOf(t, major, 10, pgtest.Options{DataChecksums: true})
			c := s.c
			c.Psql(t, "postgres", "CREATE TABLE still AS SELECT g, md5(g::text) AS v FROM generate_series(1, 100000) g")
			want := c.Psql(t, "postgres", "SELECT md5(string_agg(v, ',' ORDER BY g)) FROM still")
			still := c.Psql(t, "postgres", "SELECT pg_relation_filepath('still')")
			old := s.backupAndRestoreKeep(t)

			// a byte flipped in OLD's copy of the table nobody writes
			const at = 3*8192 + 4000
			fl, err := os.OpenFile(filepath.Join(old.dest, still), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			orig := []byte{0}
			if _, err := fl.ReadAt(orig, at); err != nil {
				t.Fatal(err)
			}
			if _, err := fl.WriteAt([]byte{orig[0] ^ 0x20}, at); err != nil {
				t.Fatal(err)
			}
			fl.Close()
			before := tree(t, old.dest, old.tsNew)

			stop := s.load(t)
			time.Sleep(3 * time.Second)
			dest, tsNew := c.TempDir(t), c.TempDir(t)
			r := run(t, 10*time.Minute, env(), script, "-j", "2", "--reference", old.dest, "-T", s.tsDir+"="+tsNew, c.DSN(), dest)
			stop()
			if r.code != 0 {
				t.Fatalf("pgbb-basebackup --reference: exit %d\nstderr:\n%s", r.code, r.stderr)
			}
			m := regexp.MustCompile(`backup complete: [^\n]*; fetched (\d+) bytes, took (\d+) bytes from the reference after a digest match, (\d+) ranges re-fetched`).FindStringSubmatch(r.stderr)
			if m == nil {
				t.Fatalf("no summary line with the reference's counters:\n%s", r.stderr)
			}
			fetched, _ := strconv.ParseInt(m[1], 10, 64)
			taken, _ := strconv.ParseInt(m[2], 10, 64)
			refetched, _ := strconv.ParseInt(m[3], 10, 64)
			t.Logf("--reference: fetched %d, taken from OLD %d, %d ranges re-fetched, in %v", fetched, taken, refetched, r.elapsed.Round(time.Millisecond))
			if taken == 0 || fetched > taken/2 || refetched == 0 {
				t.Errorf("fetched %d bytes and took %d from OLD with %d ranges re-fetched: want most taken from OLD, and the changed pages re-fetched", fetched, taken, refetched)
			}
			// the counters per file kind add up to the totals, and most of the relation bytes were kept
			k := regexp.MustCompile(`bytes fetched/kept by file kind: relation (\d+)/(\d+), fsm (\d+)/(\d+), vm (\d+)/(\d+), other (\d+)/(\d+)`).FindStringSubmatch(r.stderr)
			if k == nil {
				t.Fatalf("no counters per file kind:\n%s", r.stderr)
			}
			var sumF, sumK int64
			for i := 1; i < 9; i += 2 {
				f, _ := strconv.ParseInt(k[i], 10, 64)
				kept, _ := strconv.ParseInt(k[i+1], 10, 64)
				sumF, sumK = sumF+f, sumK+kept
			}
			relF, _ := strconv.ParseInt(k[1], 10, 64)
			relK, _ := strconv.ParseInt(k[2], 10, 64)
			if sumF != fetched || sumK != taken || relK < relF {
				t.Errorf("per file kind %s: sums %d fetched and %d kept, totals %d and %d", k[0], sumF, sumK, fetched, taken)
			}
			got := []byte{0}
			f, err := os.Open(filepath.Join(dest, still))
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.ReadAt(got, at)
			f.Close()
			if err != nil || got[0] != orig[0] {
				t.Fatalf("the byte flipped in OLD reads %#x in the new backup (%v), the source's is %#x", got[0], err, orig[0])
			}
			if after := tree(t, old.dest, old.tsNew); after != before {
				t.Fatalf("OLD changed during the backup:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			s.checkExcluded(t, dest)
			rc := s.checkRestore(t, dest, tsNew)
			if got := rc.Psql(t, "postgres", "SELECT md5(string_agg(v, ',' ORDER BY g)) FROM still"); got != want {
				t.Fatalf("the table nobody writes reads back %s, the source %s", got, want)
			}

			// refusals: exit 2, nothing started, OLD and an existing DEST untouched
			notBackup := c.TempDir(t)
			os.MkdirAll(filepath.Join(notBackup, "global"), 0o700)
			refusals := []struct {
				name, ref, dest, want string
				args                  []string
			}{
				{"not a backup", notBackup, "", "is not a complete plain backup", nil},
				{"DEST inside OLD", old.dest, filepath.Join(old.dest, "new"), "overlap", nil},
				{"tar", old.dest, "", "plain backups only", []string{"-F", "tar"}},
			}
			if major == 15 {
				// an incremental of a server before 17 is refused in pre-flight, before anything starts
				refusals = append(refusals, struct {
					name, ref, dest, want string
					args                  []string
				}{"incremental before 17", "", "", "need PostgreSQL 17 or later", []string{"--incremental", old.dest}})
			}
			if major == 18 {
				refusals = append(refusals, struct {
					name, ref, dest, want string
					args                  []string
				}{"another cluster", oldOther, "", "is a backup of system", nil})
			}
			for _, rf := range refusals {
				d := rf.dest
				if d == "" {
					d = filepath.Join(c.TempDir(t), "new")
				}
				args := append([]string{"-j", "2"}, rf.args...)
				if rf.ref != "" {
					args = append(args, "--reference", rf.ref)
				}
				args = append(args, c.DSN(), d)
				r := run(t, 2*time.Minute, env(), script, args...)
				// the cause, and no other error: every error line says it
				others := false
				for _, l := range strings.Split(r.stderr, "\n") {
					others = others || (strings.Contains(l, ": error: ") && !strings.Contains(l, rf.want))
				}
				if r.code != 2 || !strings.Contains(lastLines(r.stderr, 2), rf.want) || others {
					t.Errorf("%s: exit %d, want 2 and %q at the end of:\n%s", rf.name, r.code, rf.want, r.stderr)
				}
				t.Logf("%s: %s", rf.name, lastLines(r.stderr, 2))
				if _, err := os.Stat(d); err == nil {
					t.Errorf("%s: the refused run left %s", rf.name, d)
				}
			}
			if after := tree(t, old.dest, old.tsNew); after != before {
				t.Fatalf("a refused run changed OLD")
			}
			expectNothingOnServer(t, c)
			for _, name := range []string{"backup_manifest", "backup_label", "global/pg_control"} {
				b, err := os.ReadFile(filepath.Join(old.dest, name))
				if err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(filepath.Dir(filepath.Join(oldOther, name)), 0o700)
				if err := os.WriteFile(filepath.Join(oldOther, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
