package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
	"github.com/pgbb/pgbb/internal/wal"
)

// copier is one run of pgbb-xlog --continuous, as the server's OS user (restore_command, run by the
// server, reads what it writes).
type copier struct {
	cmd    *exec.Cmd
	stderr lockedBuffer
	done   chan struct{}
}

// lockedBuffer is a bytes.Buffer that a test may read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startCopier(t *testing.T, c *pgtest.Cluster, dir, slot string, extraEnv ...string) *copier {
	t.Helper()
	cmd := c.ServerCommand(bin("pgbb-xlog"), "--continuous", dir, "--slot", slot, "--create-slot", "--delay", "200ms", "-v", c.DSN())
	cmd.Stdout = os.Stderr // nothing: --continuous writes no stream
	cmd.Env = env(extraEnv...)
	k := &copier{cmd: cmd, done: make(chan struct{})}
	cmd.Stderr = &k.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(k.done) }()
	t.Cleanup(func() { k.kill() })
	return k
}

// alive fails t with the copier's stderr when it has ended.
func (k *copier) alive(t *testing.T) {
	t.Helper()
	select {
	case <-k.done:
		t.Fatalf("pgbb-xlog --continuous ended: exit %d\n%s", k.cmd.ProcessState.ExitCode(), k.stderr.String())
	default:
	}
}

func (k *copier) kill() {
	k.cmd.Process.Signal(syscall.SIGKILL)
	<-k.done
}

// dirState lists a --continuous directory: complete segments by number, partials, temporary files.
type dirState struct {
	segments       []wal.Segment
	partials, tmps []string
}

func scanWALDir(t *testing.T, dir string) dirState {
	t.Helper()
	var st dirState
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".partial"):
			st.partials = append(st.partials, name)
		case strings.HasSuffix(name, ".tmp"):
			st.tmps = append(st.tmps, name)
		default:
			if seg, err := wal.ParseSegmentName(name, 16<<20); err == nil {
				st.segments = append(st.segments, seg)
			}
		}
	}
	sort.Slice(st.segments, func(i, j int) bool { return st.segments[i].No < st.segments[j].No })
	return st
}

func (d dirState) lastNo() (uint64, bool) {
	if len(d.segments) == 0 {
		return 0, false
	}
	return d.segments[len(d.segments)-1].No, true
}

// slotWatch samples the slot against the directory while copiers run: the slot must never be ahead of
// what the directory holds (WAL lost), nor hold back more than the segment being written.
type slotWatch struct {
	mu         sync.Mutex
	samples    int
	violations []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func watchSlot(t *testing.T, c *pgtest.Cluster, dir, slot string) *slotWatch {
	w := &slotWatch{stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			before := scanWALDir(t, dir)
			out, err := c.Command("psql", "-XAtqc", "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '"+slot+"'").Output()
			after := scanWALDir(t, dir)
			lsn, perr := wal.ParseLSN(strings.TrimSpace(string(out)))
			b, okb := before.lastNo()
			a, _ := after.lastNo()
			if err != nil || perr != nil || !okb {
				continue
			}
			restart := uint64(lsn) / (16 << 20)
			w.mu.Lock()
			w.samples++
			if restart < b {
				w.violations = append(w.violations, fmt.Sprintf("slot at %s holds segment %d back, the directory ended with %d before", lsn, restart, b))
			}
			if restart > a+1 {
				w.violations = append(w.violations, fmt.Sprintf("slot at %s is past the directory, which ends with segment %d", lsn, a))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *slotWatch) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	if len(w.violations) > 0 {
		t.Fatalf("the slot left the directory's end in %d of %d samples: %s", len(w.violations), w.samples, strings.Join(w.violations, "; "))
	}
	if w.samples < 10 {
		t.Fatalf("only %d samples of the slot", w.samples)
	}
	t.Logf("slot within one segment of the directory's end in all %d samples", w.samples)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestContinuousWAL: pgbb-xlog --continuous copies a loaded primary's WAL into a directory while it is
// killed twice (once halfway through writing a segment); a pgbb base backup taken meanwhile, restored
// with restore_command from the directory, replays to the last segment and holds every transaction
// committed before it; every segment passes pg_waldump; the slot stays within a segment of the directory.
func TestContinuousWAL(t *testing.T) {
	s := newSource(t, 5)
	root := s.c.TempDir(t)
	dir := filepath.Join(root, "wal")
	const slot = "pgbb_wal"
	stopLoad := s.load(t)
	watch := watchSlot(t, s.c, dir, slot)

	// first run: killed halfway through writing its first segment
	hooks := &hooks{t: t, dir: s.c.TempDir(t)} // the copier runs as the server's user
	k := startCopier(t, s.c, dir, slot, "PGBB_TEST_HOOKS="+hooks.dir)
	waitFor(t, 3*time.Minute, "the copier halfway through a segment", func() bool {
		k.alive(t)
		_, err := os.Stat(filepath.Join(hooks.dir, "continuous-segment.reached"))
		return err == nil
	})
	k.kill()
	st := scanWALDir(t, dir)
	if len(st.tmps) != 1 || len(st.segments) != 0 {
		t.Fatalf("killed halfway through its first segment, the directory holds %+v: want one temporary file and no segment", st)
	}
	if !strings.Contains(k.stderr.String(), "created the physical replication slot "+slot) {
		t.Fatalf("no slot creation said:\n%s", k.stderr.String())
	}

	// second run: removes the temporary file, copies segments, killed while it writes a partial
	k = startCopier(t, s.c, dir, slot)
	waitFor(t, 3*time.Minute, "three segments and a partial", func() bool {
		k.alive(t)
		st := scanWALDir(t, dir)
		return len(st.segments) >= 3 && len(st.partials) == 1
	})
	k.kill()
	if st := scanWALDir(t, dir); len(st.tmps) > 1 {
		t.Fatalf("temporary files left: %v", st.tmps)
	}

	// third run: a pgbb base backup under load while it copies
	k = startCopier(t, s.c, dir, slot)
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	r := run(t, 10*time.Minute, env(), script, "-j", "2", "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup exit %d\n%s", r.code, r.stderr)
	}
	time.Sleep(2 * time.Second)
	stopLoad()
	// a killed client's backend may still be committing: the expected state is read once none is left
	waitFor(t, time.Minute, "pgbench's backends gone", func() bool {
		return s.c.Psql(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'") == "0"
	})
	// the server restarts under the copier, which connects again (the planted backup_label and
	// tablespace_map and slot directory, which no restart would take, go first)
	os.Remove(filepath.Join(s.c.Dir, "backup_label"))
	os.Remove(filepath.Join(s.c.Dir, "tablespace_map"))
	os.RemoveAll(filepath.Join(s.c.Dir, "pg_replslot", "planted_slot"))
	s.c.Restart(t)
	waitFor(t, time.Minute, "the copier connected again", func() bool {
		k.alive(t)
		return strings.Contains(k.stderr.String(), "connected again")
	})
	want := s.c.Psql(t, "postgres", "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT count(*) FROM in_ts)")
	switchLSN, err := wal.ParseLSN(s.c.Psql(t, "postgres", "SELECT pg_switch_wal()"))
	if err != nil {
		t.Fatal(err)
	}
	lastSeg := uint64(switchLSN-1) / (16 << 20)
	waitFor(t, time.Minute, "the switched segment in the directory", func() bool {
		k.alive(t)
		no, ok := scanWALDir(t, dir).lastNo()
		return ok && no >= lastSeg
	})
	watch.finish(t)
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the copier did not stop on SIGTERM")
	}
	if code := k.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(k.stderr.String(), "stopped;") {
		t.Fatalf("SIGTERM: exit %d\n%s", code, k.stderr.String())
	}

	last := checkWALDir(t, dir)

	// the backup restored with the directory: archive recovery to the end of the WAL there
	s.verifyPlain(t, dest)
	restored := restoreWithDir(t, dest, dir)
	got := restored.Psql(t, "postgres", "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT count(*) FROM in_ts)")
	if got != want {
		t.Fatalf("restored with the directory: balance, history rows, tablespace rows %s; the primary had %s at the switch", got, want)
	}
	log, _ := os.ReadFile(restored.LogFile)
	if !bytes.Contains(log, []byte("restored log file \""+last.Name()+"\" from archive")) {
		t.Fatalf("the restore did not take the directory's last segment %s:\n%s", last.Name(), lastLines(string(log), 20))
	}
	s.checkRestored(t, restored, tsNew)
}

// runAsServer runs pgbb-xlog as the server's OS user.
func runAsServer(t *testing.T, c *pgtest.Cluster, args ...string) result {
	t.Helper()
	cmd := c.ServerCommand(bin("pgbb-xlog"), args...)
	cmd.Env = env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("pgbb-xlog %v did not end\n%s", args, e.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: o.String(), stderr: e.String()}
}

// listing is a directory's names, sizes and modification times.
func listing(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

func slotCount(t *testing.T, c *pgtest.Cluster) string {
	return c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots")
}

// TestContinuousRefusesBadInput: flags, a missing slot, a directory of another cluster, with a foreign
// file, with a gap, in use, or whose end the server's WAL has moved past. Each is refused with a message
// that names it; the directory is left as it was, and no slot is left made.
func TestContinuousRefusesBadInput(t *testing.T) {
	a := pgtest.New(t, pgtest.Options{})
	b := pgtest.New(t, pgtest.Options{})
	dir := filepath.Join(a.TempDir(t), "wal")
	refused := func(r result, code int, want ...string) {
		t.Helper()
		if r.code != code {
			t.Fatalf("exit %d, want %d\n%s", r.code, code, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Fatalf("stderr lacks %q:\n%s", w, r.stderr)
			}
		}
	}
	refused(runAsServer(t, a, "--continuous", dir, a.DSN()), 2, "pgbb-xlog: error: --continuous needs --slot", "hint:")
	refused(runAsServer(t, a, "--continuous", dir, "--slot", "Bad-Name", a.DSN()), 2, "bad slot name")
	refused(runAsServer(t, a, "--slot", "s", a.DSN()), 2, "need --continuous")
	refused(runAsServer(t, a, "--continuous", dir, "--slot", "s", a.DSN(), "--", "true"), 2, "runs no command")
	refused(runAsServer(t, a, "--continuous", dir, "--slot", "nosuch", a.DSN()), 2, "replication slot nosuch does not exist", "--create-slot")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused run made the directory: %v", err)
	}

	// a directory of a's WAL
	k := startCopier(t, a, dir, "s")
	a.Psql(t, "postgres", "CREATE TABLE t (v text)")
	for i := 0; i < 4; i++ {
		a.Psql(t, "postgres", "INSERT INTO t SELECT md5(g::text) FROM generate_series(1, 1000) g; SELECT pg_switch_wal()")
	}
	waitFor(t, time.Minute, "three segments", func() bool {
		k.alive(t)
		return len(scanWALDir(t, dir).segments) >= 3
	})
	// the same directory twice at once
	refused(runAsServer(t, a, "--continuous", dir, "--slot", "other", "--create-slot", a.DSN()), 2, "in use by another process")
	k.cmd.Process.Signal(syscall.SIGTERM)
	<-k.done
	if n := slotCount(t, a); n != "1" {
		t.Fatalf("%s slots on a, want the copier's one", n)
	}
	before := listing(t, dir)
	unchanged := func() {
		t.Helper()
		if after := listing(t, dir); after != before {
			t.Fatalf("a refused run changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}

	refused(runAsServer(t, b, "--continuous", dir, "--slot", "s", "--create-slot", b.DSN()), 2, "system identifier", "another cluster")
	unchanged()
	if n := slotCount(t, b); n != "0" {
		t.Fatalf("a refused run left %s slots on b", n)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600)
	refused(runAsServer(t, a, "--continuous", dir, "--slot", "s", a.DSN()), 2, "notes.txt")
	os.Remove(filepath.Join(dir, "notes.txt"))
	unchanged()
	st := scanWALDir(t, dir)
	mid := filepath.Join(dir, st.segments[1].Name())
	os.Rename(mid, mid+".aside")
	os.Rename(mid+".aside", filepath.Join(filepath.Dir(dir), "aside"))
	refused(runAsServer(t, a, "--continuous", dir, "--slot", "s", a.DSN()), 2, "lacks segment")
	os.Rename(filepath.Join(filepath.Dir(dir), "aside"), mid)
	unchanged()

	// the slot dropped, and the server's WAL moved on: a new slot would leave a gap
	a.Psql(t, "postgres", "SELECT pg_drop_replication_slot('s')")
	for i := 0; i < 3; i++ {
		a.Psql(t, "postgres", "INSERT INTO t SELECT md5(g::text) FROM generate_series(1, 1000) g; SELECT pg_switch_wal()")
	}
	a.Psql(t, "postgres", "CHECKPOINT")
	refused(runAsServer(t, a, "--continuous", dir, "--slot", "s", "--create-slot", a.DSN()), 1, "a gap cannot be filled")
	unchanged()
	if n := slotCount(t, a); n != "0" {
		t.Fatalf("the refused run left %s slots", n)
	}
}

// restoreWithDir restores a plain pgbb backup with restore_command from dir (archive recovery to the end of
// the WAL there, onto the newest timeline), waits for the end of recovery and returns the cluster.
func restoreWithDir(t *testing.T, dest, dir string) *pgtest.Cluster {
	t.Helper()
	restored := startFromDir(t, dest, dir, "recovery.signal")
	waitFor(t, 3*time.Minute, "the end of archive recovery", func() bool {
		out, err := restored.Command("psql", "-XAtqc", "SELECT pg_is_in_recovery()").Output()
		return err == nil && strings.TrimSpace(string(out)) == "f"
	})
	return restored
}

// startFromDir starts the restored backup in dest with restore_command from dir and the given signal file
// (recovery.signal: archive recovery; standby.signal: a standby fed by dir alone, which tries dir again
// every 200 ms).
func startFromDir(t *testing.T, dest, dir, signal string) *pgtest.Cluster {
	t.Helper()
	conf, err := os.OpenFile(filepath.Join(dest, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conf, "restore_command = 'cp %s/%%f %%p'\nwal_retrieve_retry_interval = '200ms'\n", dir)
	conf.Close()
	if err := os.WriteFile(filepath.Join(dest, signal), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.ChownToServerUser(dest); err != nil {
		t.Fatal(err)
	}
	return pgtest.Start(t, dest)
}

// TestContinuousWALFollowsPromotion: the copier follows a hot standby, which is promoted under it. The
// directory gets the new timeline's history file and its segments from the switch on, without a gap;
// a pgbb backup of the old primary, restored with the directory, replays across the switch onto the
// new timeline and holds every transaction the promoted server committed.
func TestContinuousWALFollowsPromotion(t *testing.T) {
	s := newSource(t, 5)
	sb := s.newStandby(t)
	dir := filepath.Join(sb.c.TempDir(t), "wal")
	const slot = "pgbb_wal"
	stopLoad := s.load(t)
	k := startCopier(t, sb.c, dir, slot)
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	r := run(t, 10*time.Minute, env(), script, "-j", "2", "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup exit %d\n%s", r.code, r.stderr)
	}
	waitFor(t, 3*time.Minute, "two segments from the standby", func() bool {
		k.alive(t)
		return len(scanWALDir(t, dir).segments) >= 2
	})
	stopLoad()
	sb.promote(t)
	// writes on the new timeline
	if r := run(t, 5*time.Minute, sb.c.Command("pgbench").Env, filepath.Join(pgtest.BinDir(), "pgbench"), "-n", "-c", "2", "-t", "300"); r.code != 0 {
		t.Fatalf("pgbench on the promoted standby: %s", r.stderr)
	}
	want := sb.c.Psql(t, "postgres", "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT count(*) FROM in_ts)")
	switchLSN, err := wal.ParseLSN(sb.c.Psql(t, "postgres", "SELECT pg_switch_wal()"))
	if err != nil {
		t.Fatal(err)
	}
	lastSeg := uint64(switchLSN-1) / (16 << 20)
	waitFor(t, time.Minute, "the promoted server's switched segment", func() bool {
		k.alive(t)
		st := scanWALDir(t, dir)
		no, ok := st.lastNo()
		return ok && no >= lastSeg && st.segments[len(st.segments)-1].Timeline == 2
	})
	k.cmd.Process.Signal(syscall.SIGTERM)
	<-k.done
	if !strings.Contains(k.stderr.String(), "the server is on timeline 2") {
		t.Fatalf("the copier did not say it follows timeline 2:\n%s", k.stderr.String())
	}
	hist, err := os.ReadFile(filepath.Join(dir, "00000002.history"))
	if want, _ := os.ReadFile(filepath.Join(sb.c.Dir, "pg_wal", "00000002.history")); err != nil || !bytes.Equal(hist, want) {
		t.Fatalf("the directory's 00000002.history %q (%v), the server's %q", hist, err, want)
	}
	st := scanWALDir(t, dir)
	for i := 1; i < len(st.segments); i++ {
		if st.segments[i].No != st.segments[i-1].No+1 {
			t.Fatalf("segment %d missing: %v", st.segments[i-1].No+1, st.segments)
		}
		if st.segments[i].Timeline < st.segments[i-1].Timeline {
			t.Fatalf("timeline goes back: %v", st.segments)
		}
	}
	tl2 := 0
	for _, seg := range st.segments {
		if seg.Timeline == 2 {
			tl2++
		}
	}
	if tl2 == 0 || tl2 == len(st.segments) {
		t.Fatalf("want segments of both timelines: %v", st.segments)
	}
	s.verifyPlain(t, dest)
	restored := restoreWithDir(t, dest, dir)
	if got := restored.Psql(t, "postgres", "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT count(*) FROM in_ts)"); got != want {
		t.Fatalf("restored across the switch: %s; the promoted server had %s", got, want)
	}
	log, _ := os.ReadFile(restored.LogFile)
	if !bytes.Contains(log, []byte("restored log file \"00000002.history\" from archive")) {
		t.Fatalf("the restore did not take the history file:\n%s", lastLines(string(log), 30))
	}
	s.checkRestored(t, restored, tsNew)
}

// TestContinuousWALFeedsStandby: a standby restoring only from the directory (standby.signal,
// restore_command, no streaming) follows a primary under pgbench load while the copier is SIGKILLed twice
// (once while it writes a partial, once just after a segment) and started again each time. The standby
// keeps replaying across the kills, catches up to the primary's switch once the load stops, and holds
// what the primary held there; the slot stays within a segment of the directory's end throughout; the
// directory is whole; the standby, promoted, passes the oracle.
func TestContinuousWALFeedsStandby(t *testing.T) {
	s := newSource(t, 5)
	dir := filepath.Join(s.c.TempDir(t), "wal")
	const slot = "pgbb_wal"
	stopLoad := s.load(t)
	defer stopLoad()
	watch := watchSlot(t, s.c, dir, slot)
	k := startCopier(t, s.c, dir, slot)
	waitFor(t, time.Minute, "the slot made", func() bool {
		k.alive(t)
		return slotCount(t, s.c) == "1"
	})

	// the standby: a pgbb backup taken under the load, fed by restore_command alone
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	r := run(t, 10*time.Minute, env(), script, "-j", "2", "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup exit %d\n%s", r.code, r.stderr)
	}
	s.verifyPlain(t, dest)
	sb := startFromDir(t, dest, dir, "standby.signal")
	replayed := func() wal.LSN {
		out, err := sb.Command("psql", "-XAtqc", "SELECT pg_last_wal_replay_lsn()").Output()
		lsn, perr := wal.ParseLSN(strings.TrimSpace(string(out)))
		if err != nil || perr != nil {
			return 0
		}
		return lsn
	}
	// segNo is the segment a standby that has replayed to lsn reads next
	segNo := func(lsn wal.LSN) uint64 { return wal.SegmentOf(lsn, 1, 16<<20).No }
	following := func(what string) {
		t.Helper()
		from := segNo(replayed())
		waitFor(t, 3*time.Minute, what, func() bool {
			k.alive(t)
			return segNo(replayed()) >= from+2
		})
	}
	following("the standby replaying two more segments from the directory")

	// first kill: while the copier writes the current segment's partial
	waitFor(t, time.Minute, "a partial", func() bool {
		k.alive(t)
		return len(scanWALDir(t, dir).partials) == 1
	})
	k.kill()
	k = startCopier(t, s.c, dir, slot)
	following("the standby replaying two more segments after the first kill")

	// second kill: just after a segment came in
	n := len(scanWALDir(t, dir).segments)
	waitFor(t, time.Minute, "one more segment", func() bool {
		k.alive(t)
		return len(scanWALDir(t, dir).segments) > n
	})
	k.kill()
	k = startCopier(t, s.c, dir, slot)
	following("the standby replaying two more segments after the second kill")

	// the load stops: the standby catches up to the primary's switch
	stopLoad()
	waitFor(t, time.Minute, "pgbench's backends gone", func() bool {
		return s.c.Psql(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'") == "0"
	})
	const state = "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT count(*) FROM in_ts)"
	want := s.c.Psql(t, "postgres", state)
	switchLSN, err := wal.ParseLSN(s.c.Psql(t, "postgres", "SELECT pg_switch_wal()"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the standby at the primary's switch "+switchLSN.String(), func() bool {
		k.alive(t)
		return replayed() >= switchLSN
	})
	if got := sb.Psql(t, "postgres", state); got != want {
		t.Fatalf("the standby at the switch: balance, history rows, tablespace rows %s; the primary had %s", got, want)
	}
	watch.finish(t)
	k.cmd.Process.Signal(syscall.SIGTERM)
	<-k.done
	checkWALDir(t, dir)
	log, _ := os.ReadFile(sb.LogFile)
	if got := bytes.Count(log, []byte("from archive")); got < 6 {
		t.Fatalf("the standby restored %d files from the directory:\n%s", got, lastLines(string(log), 20))
	}
	(&source{c: sb}).promote(t)
	s.checkRestored(t, sb, tsNew)
}

// checkWALDir checks a --continuous directory once its copier has stopped: consecutive whole segments, no
// temporary file, all read by pg_waldump.
func checkWALDir(t *testing.T, dir string) (last wal.Segment) {
	t.Helper()
	st := scanWALDir(t, dir)
	if len(st.tmps) != 0 {
		t.Fatalf("temporary files left: %v", st.tmps)
	}
	if len(st.segments) == 0 {
		t.Fatal("no segment in the directory")
	}
	for i := 1; i < len(st.segments); i++ {
		if st.segments[i].No != st.segments[i-1].No+1 {
			t.Fatalf("segment %d missing: %v", st.segments[i-1].No+1, st.segments)
		}
	}
	for _, seg := range st.segments {
		if fi, err := os.Stat(filepath.Join(dir, seg.Name())); err != nil || fi.Size() != 16<<20 {
			t.Fatalf("segment %s: %v %v", seg.Name(), fi, err)
		}
	}
	first, last := st.segments[0], st.segments[len(st.segments)-1]
	dump := exec.Command(filepath.Join(pgtest.BinDir(), "pg_waldump"), "--stats", "-p", dir, first.Name(), last.Name())
	if out, err := dump.CombinedOutput(); err != nil {
		t.Fatalf("pg_waldump %s..%s: %v\n%s", first.Name(), last.Name(), err, lastLines(string(out), 10))
	}
	t.Logf("%d segments, %s to %s, pass pg_waldump", len(st.segments), first.Name(), last.Name())
	return last
}
