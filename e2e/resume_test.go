package e2e

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// Issue 13: fetch jobs survive their connection being terminated, a killed run is kept and resumed, and
// --resume refuses what it must not touch. docs/resume.md is the design these tests hold it to.

// counters are the figures of pgbb-pack's summary line.
type counters struct{ fetched, reused, refetched, retries int64 }

var summaryRE = regexp.MustCompile(`backup complete: [^\n]*; fetched (\d+) bytes, reused (\d+) bytes after a digest match, (\d+) ranges re-fetched after a mismatch, (\d+) retries`)

// summary parses the summary line of a run's stderr; it fails the test when there is none.
func summary(t *testing.T, stderr string) counters {
	t.Helper()
	m := summaryRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary line with the counters in stderr:\n%s", stderr)
	}
	n := make([]int64, 4)
	for i := range n {
		n[i], _ = strconv.ParseInt(m[i+1], 10, 64)
	}
	return counters{n[0], n[1], n[2], n[3]}
}

// Every fetch job's backend terminated once while it reads (pg_terminate_backend, as an admin or a pooler
// would): the jobs reconnect and go on, the run exits 0, the summary counts the retries, and the restore
// oracle holds. Both data paths.
func TestFetchJobsSurviveTerminatedConnections(t *testing.T) {
	s := newSource(t, 10)
	for _, variant := range [][]string{{"--fanout", "xargs"}, {"--fanout", "parallel", "--no-direct-write"}} {
		t.Run(strings.Join(variant, " "), func(t *testing.T) {
			stop := s.load(t)
			defer stop()
			dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
			done := make(chan result, 1)
			args := append([]string{"-j", "2", "-v"}, variant...)
			go func() {
				done <- run(t, 10*time.Minute, env(), script, append(args, "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)...)
			}()
			// once both jobs are reading, terminate each one's backend, once
			terminated := 0
			var r result
		wait:
			for {
				select {
				case r = <-done:
					break wait
				case <-time.After(10 * time.Millisecond):
				}
				if terminated > 0 {
					continue
				}
				// one statement, which sees both jobs active and terminates both, or neither
				n, _ := strconv.Atoi(s.c.Psql(t, "postgres", "WITH a AS (SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbb-fetch' AND state = 'active') "+
					"SELECT count(pg_terminate_backend(pid)) FROM a WHERE (SELECT count(*) FROM a) = 2"))
				terminated = n
			}
			stop()
			if terminated < 2 {
				t.Fatalf("terminated %d fetch backends, want both jobs' (the run ended first?)\n%s", terminated, r.stderr)
			}
			if r.code != 0 {
				t.Fatalf("exit %d after %d terminated fetch connections\nstderr:\n%s", r.code, terminated, r.stderr)
			}
			if !strings.Contains(r.stderr, "pgbb-fetch: info: retry 1 of 5 in 500ms: ") {
				t.Errorf("-v does not say that a job reconnected, and why:\n%s", r.stderr)
			}
			c := summary(t, r.stderr)
			if c.retries < int64(terminated) {
				t.Errorf("summary counts %d retries, %d connections were terminated", c.retries, terminated)
			}
			for _, l := range strings.Split(r.stderr, "\n") {
				if strings.Contains(l, "retr") {
					t.Log(l)
				}
			}
			t.Logf("%d backends terminated; %+v", terminated, c)
			s.checkExcluded(t, dest)
			s.checkRestore(t, dest, tsNew)
		})
	}
}

// A fetch job's backend terminated between its connect and its first query (the full suite once caught
// a job there): the job connects again and the run completes, as after a drop while it reads.
func TestFetchJobSurvivesTerminationWhileConnecting(t *testing.T) {
	s := newSource(t, 1)
	h := newHooks(t)
	h.pass("fetch")
	h.pass("stop")
	h.hold("fetch-connected")
	stop := s.load(t)
	defer stop()
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	done := make(chan result, 1)
	go func() {
		done <- run(t, 5*time.Minute, env("PGBB_TEST_HOOKS="+h.dir), script, "-j", "2", "-v", "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	}()
	terminated := 0
	h.at("fetch-connected", done, func() {
		terminated, _ = strconv.Atoi(s.c.Psql(t, "postgres", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgbb-fetch'"))
	})
	r := <-done
	stop()
	if terminated < 1 {
		t.Fatalf("no fetch backend was terminated at its connect\n%s", r.stderr)
	}
	if r.code != 0 {
		t.Fatalf("exit %d after %d fetch connections were terminated at their connect\nstderr:\n%s", r.code, terminated, r.stderr)
	}
	if !strings.Contains(r.stderr, "pgbb-fetch: info: retry 1 of 5 in 500ms: connect: ") {
		t.Errorf("-v does not say that a job connected again, and why:\n%s", r.stderr)
	}
	if c := summary(t, r.stderr); c.retries < int64(terminated) {
		t.Errorf("summary counts %d retries, %d connections were terminated", c.retries, terminated)
	}
	s.checkExcluded(t, dest)
	s.checkRestore(t, dest, tsNew)
}

// killRun SIGKILLs every process that holds marker in its environment (the script, the four programs, the
// fan-out and its children), as a power loss would end them, until none is left.
func killRun(t *testing.T, marker string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		procs := procsWith(marker)
		if len(procs) == 0 {
			return
		}
		for pid := range procs {
			syscall.Kill(pid, syscall.SIGSTOP) // nothing of the run starts anything new
		}
		for pid := range procs {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("processes of the run survive SIGKILL: %v", procsWith(marker))
}

// allocated returns the bytes allocated to regular files below the directories.
func allocated(dirs ...string) int64 {
	var n int64
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if fi, err := e.Info(); err == nil {
					n += fi.Sys().(*syscall.Stat_t).Blocks * 512
				}
			}
			return nil
		})
	}
	return n
}

// killAt starts the script with args in the background and SIGKILLs the whole run once DEST (and the other
// directories) hold frac of want bytes. It fails the test when the run ends first.
func killAt(t *testing.T, frac float64, want int64, args []string, dirs ...string) {
	t.Helper()
	h := newHooks(t) // a marker only: no point is held
	h.pass("fetch")
	h.pass("stop")
	marker := "PGBB_TEST_HOOKS=" + h.dir
	done := make(chan result, 1)
	go func() { done <- run(t, 10*time.Minute, env(marker), script, args...) }()
	for {
		select {
		case r := <-done:
			t.Fatalf("the run ended (exit %d) before it held %.0f%% of %d bytes\n%s", r.code, frac*100, want, r.stderr)
		case <-time.After(5 * time.Millisecond):
		}
		if got := allocated(dirs...); float64(got) >= frac*float64(want) {
			killRun(t, marker)
			r := <-done
			t.Logf("killed at %d of %d bytes (exit %d)", got, want, r.code)
			return
		}
	}
}

// tree is a snapshot of a directory: every entry's mode, size, modification time and content digest.
func tree(t *testing.T, dirs ...string) string {
	t.Helper()
	var lines []string
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				lines = append(lines, p+" "+err.Error())
				return nil
			}
			fi, _ := os.Lstat(p)
			line := fmt.Sprintf("%s %v %d %d", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
			switch {
			case fi.Mode().IsRegular():
				b, _ := os.ReadFile(p)
				line += fmt.Sprintf(" %x", sha256.Sum256(b))
			case fi.Mode()&fs.ModeSymlink != 0:
				l, _ := os.Readlink(p)
				line += " -> " + l
			}
			lines = append(lines, line)
			return nil
		})
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// relFiles returns the main-fork segment files below DEST/base/<db> with at least min bytes, largest first.
func relFiles(t *testing.T, dir string, min int64) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	type f struct {
		p string
		n int64
	}
	var fs []f
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() >= min && regexp.MustCompile(`^\d+(\.\d+)?$`).MatchString(e.Name()) {
			fs = append(fs, f{filepath.Join(dir, e.Name()), fi.Size()})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].n > fs[j].n })
	var out []string
	for _, x := range fs {
		out = append(out, x.p)
	}
	return out
}

// Scale 10 under pgbench -c 2, the whole run SIGKILLed at about 60% of its bytes; between the kill and the
// resume a byte is flipped in a stored file, a stored file is cut short and another removed. --resume exits
// 0, reuses what it proved, fetches again what was damaged, and the restore oracle holds (with data
// checksums on, a flipped byte kept would fail pg_amcheck; a table nobody writes must read back as it is on
// the source).
func TestResumeAfterKill(t *testing.T) {
	s := newSource(t, 10)
	s.c.Psql(t, "postgres", "CREATE TABLE still AS SELECT g, md5(g::text) AS v FROM generate_series(1, 300000) g")
	want := s.c.Psql(t, "postgres", "SELECT md5(string_agg(v, ',' ORDER BY g)) FROM still")
	still := s.c.Psql(t, "postgres", "SELECT pg_relation_filepath('still')")
	// with --no-direct-write the jobs cannot read DEST back: the resume fetches everything again, and is
	// just as correct
	for _, variant := range [][]string{{"--fanout", "xargs"}, {"--fanout", "parallel"}, {"--fanout", "xargs", "--no-direct-write"}} {
		direct := !strings.Contains(strings.Join(variant, " "), "--no-direct-write")
		t.Run(strings.Join(variant, " "), func(t *testing.T) {
			stop := s.load(t)
			defer stop()
			dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
			total, _ := strconv.ParseInt(s.c.Psql(t, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"), 10, 64)
			args := append(append([]string{"-j", "2"}, variant...), "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
			killAt(t, 0.6, total, args, dest, tsNew)
			if _, err := os.Stat(filepath.Join(dest, ".pgbb-incomplete")); err != nil {
				t.Fatalf("the killed run left no state file: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
				t.Fatal("the killed run left a backup_manifest")
			}
			expectNothingOnServer(t, s.c)

			// damage DEST: a byte flipped in the table nobody writes (or, where the kill came before
			// it, in the largest stored file), the second largest file cut short mid-page, the third
			// removed
			db := filepath.Join(dest, "base", s.dbOID)
			files := relFiles(t, db, 3*8192)
			if len(files) < 3 {
				t.Fatalf("the killed run stored %d relation files of 24 kB or more, want 3", len(files))
			}
			flip := files[0]
			if fi, err := os.Stat(filepath.Join(dest, still)); err == nil && fi.Size() >= 3*8192 {
				flip = filepath.Join(dest, still)
			}
			var others []string
			for _, f := range files {
				if f != flip {
					others = append(others, f)
				}
			}
			fl, err := os.OpenFile(flip, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := []byte{0}
			fl.ReadAt(b, 8192+4000)
			b[0] ^= 0x20
			fl.WriteAt(b, 8192+4000)
			fl.Close()
			fi, _ := os.Stat(others[0])
			if err := os.Truncate(others[0], fi.Size()/2-100); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(others[1]); err != nil {
				t.Fatal(err)
			}
			t.Logf("flipped a byte in %s, cut %s to %d bytes, removed %s", flip, others[0], fi.Size()/2-100, others[1])

			r := run(t, 10*time.Minute, env(), script, append([]string{"--resume"}, args...)...)
			stop()
			if r.code != 0 {
				t.Fatalf("--resume: exit %d\nstderr:\n%s", r.code, r.stderr)
			}
			c := summary(t, r.stderr)
			t.Logf("resume: %+v in %v", c, r.elapsed.Round(time.Millisecond))
			switch {
			case direct && c.reused == 0:
				t.Errorf("the resume reused nothing")
			case direct && c.refetched == 0:
				t.Errorf("the flipped byte was not counted as a range fetched again")
			case !direct && (c.reused != 0 || !strings.Contains(r.stderr, "reuses nothing")):
				t.Errorf("--no-direct-write: reused %d bytes, or no warning that it reuses nothing", c.reused)
			}
			if _, err := os.Stat(filepath.Join(dest, ".pgbb-incomplete")); err == nil {
				t.Error("the state file is still there after the resume completed")
			}
			s.checkExcluded(t, dest)
			rc := s.checkRestore(t, dest, tsNew)
			if got := rc.Psql(t, "postgres", "SELECT md5(string_agg(v, ',' ORDER BY g)) FROM still"); got != want {
				t.Fatalf("the table nobody writes reads back %s, the source %s", got, want)
			}
		})
	}
}

// What --resume must not touch it refuses with a clear error (exit 2) and leaves exactly as it was: the
// DEST of another cluster, a complete backup, a directory pgbb did not make; and a tar backup cannot be
// resumed at all.
func TestResumeRefuses(t *testing.T) {
	a := newSource(t, 5)
	b := pgtest.New(t, pgtest.Options{})

	kept, keptTs := a.c.TempDir(t), a.c.TempDir(t)
	total, _ := strconv.ParseInt(a.c.Psql(t, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"), 10, 64)
	killAt(t, 0.5, total, []string{"-j", "2", "-T", a.tsDir + "=" + keptTs, a.c.DSN(), kept}, kept, keptTs)

	complete := a.c.TempDir(t)
	completeTs := a.c.TempDir(t)
	if r := run(t, 5*time.Minute, env(), script, "-T", a.tsDir+"="+completeTs, a.c.DSN(), complete); r.code != 0 {
		t.Fatalf("backup: %s", r.stderr)
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("a DBA's notes\n"), 0o644)
	os.Mkdir(filepath.Join(foreign, "base"), 0o755)

	cases := []struct {
		name, want string
		dirs       []string
		args       []string
	}{
		{"another cluster's DEST", "holds a backup of system", []string{kept, keptTs}, []string{"--resume", "-T", a.tsDir + "=" + keptTs, b.DSN(), kept}},
		{"a complete backup", "holds a complete backup", []string{complete, completeTs}, []string{"--resume", "-T", a.tsDir + "=" + completeTs, a.c.DSN(), complete}},
		{"a directory pgbb did not make", "is not an incomplete pgbb backup", []string{foreign}, []string{"--resume", a.c.DSN(), foreign}},
		{"a -T other than the first run's", "was copied to", []string{kept, keptTs}, []string{"--resume", "-T", a.tsDir + "=" + filepath.Join(t.TempDir(), "elsewhere"), a.c.DSN(), kept}},
		{"a tar backup", "--resume works on plain backups only", []string{kept, keptTs}, []string{"--resume", "-F", "tar", a.c.DSN(), kept}},
		{"with --force", "--resume and --force together", []string{kept, keptTs}, []string{"--resume", "--force", a.c.DSN(), kept}},
		{"pgbb-pack -F tar --resume", "plain", []string{kept, keptTs}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tree(t, tc.dirs...)
			var r result
			if tc.args == nil {
				r = run(t, time.Minute, env(), bin("pgbb-pack"), "--resume", "-F", "tar", "-D", kept)
			} else {
				r = run(t, 5*time.Minute, env(), script, tc.args...)
			}
			if r.code != 2 {
				t.Fatalf("exit %d, want 2 (refused)\nstderr:\n%s", r.code, r.stderr)
			}
			if last := lastLines(r.stderr, 2); !strings.Contains(last, tc.want) || !strings.Contains(last, "hint:") {
				t.Errorf("the last lines do not say %q with a hint:\n%s", tc.want, r.stderr)
			}
			if after := tree(t, tc.dirs...); after != before {
				t.Fatalf("the refused resume changed what it was given:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			expectNothingOnServer(t, a.c)
			expectNothingOnServer(t, b)
		})
	}
	// the kept DEST still resumes after all the refusals
	r := run(t, 5*time.Minute, env(), script, "--resume", "-T", a.tsDir+"="+keptTs, a.c.DSN(), kept)
	if r.code != 0 {
		t.Fatalf("--resume of the kept DEST: exit %d\n%s", r.code, r.stderr)
	}
	if c := summary(t, r.stderr); c.reused == 0 {
		t.Errorf("the resume reused nothing: %+v", c)
	}
	a.verifyPlain(t, kept)
}
