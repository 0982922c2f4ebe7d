package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 15, --max-rate and --max-rate-file (docs/toolbox.md, section 5). A run under load limited to a
// rate takes at least its bytes divided by the rate (a lower bound, which a slow machine cannot break:
// the figures within 10% are bench/maxrate.sh's) and restores through the oracle. A run that starts at
// 1 MB/s from FILE, whose FILE then says 0, says the change and ends long before 1 MB/s would allow. Bad
// rates are refused before anything starts.
var readRE = regexp.MustCompile(`max rate: the run read (\d+) bytes from the server in ([\d.]+) s`)

func TestMaxRate(t *testing.T) {
	s := newSource(t, 5)
	c := s.c
	rateFile := filepath.Join(c.TempDir(t), "rate")
	os.WriteFile(rateFile, []byte("fast\n"), 0o644)
	for _, bad := range [][]string{{"--max-rate", "10X"}, {"--max-rate", "16"}, {"-r", "2000M"}, {"--max-rate-file", rateFile}} {
		dest := filepath.Join(c.TempDir(t), "new")
		r := run(t, time.Minute, env(), script, append(bad, c.DSN(), dest)...)
		if r.code != 2 || !strings.Contains(r.stderr, "transfer rate") {
			t.Fatalf("%q: exit %d, want 2 and the bad rate named:\n%s", bad, r.code, r.stderr)
		}
		if bad[0] == "--max-rate-file" && (!strings.Contains(r.stderr, "error: --max-rate-file "+rateFile) || !strings.Contains(r.stderr, "hint: write one rate into the file")) {
			t.Errorf("%q: the error does not name the file, or the hint is --max-rate's:\n%s", bad, r.stderr)
		}
		if _, err := os.Stat(dest); !os.IsNotExist(err) {
			t.Fatalf("%q: DEST left behind (%v)", bad, err)
		}
		t.Logf("%q: %s", bad, lastLines(r.stderr, 2))
	}

	const rate = 16 << 20
	stop := s.load(t)
	dest, tsNew := c.TempDir(t), c.TempDir(t)
	start := time.Now()
	r := run(t, 10*time.Minute, env(), script, "-j", "3", "-v", "--max-rate", "16M", "-T", s.tsDir+"="+tsNew, c.DSN(), dest)
	elapsed := time.Since(start).Seconds()
	stop()
	if r.code != 0 {
		t.Fatalf("--max-rate 16M: exit %d\n%s", r.code, r.stderr)
	}
	fetched := summary(t, r.stderr).fetched
	// the bucket may start with nothing saved, and lets 0.2 s of burst through after an idle spell
	if floor := float64(fetched)/rate - 0.2; elapsed < floor {
		t.Fatalf("--max-rate 16M: %d bytes fetched in %.2f s, faster than the rate allows (%.2f s)", fetched, elapsed, floor)
	}
	// pgbb-xlog counts what the whole run read (the WAL and every job): all that was fetched, and no more
	// than the rate allows over the run, with its burst, the children's grants and what was in flight
	m := readRE.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("--max-rate 16M -v: pgbb-xlog does not say what the run read:\n%s", r.stderr)
	}
	read, _ := strconv.ParseInt(m[1], 10, 64)
	secs, _ := strconv.ParseFloat(m[2], 64)
	if read < fetched || float64(read) > rate*(secs+0.05+0.2)+4<<20 {
		t.Fatalf("--max-rate 16M: the run read %d bytes in %.1f s, %d of them fetched data: want at least the data and at most the rate's", read, secs, fetched)
	}
	t.Logf("--max-rate 16M: %d bytes of data fetched in %.2f s; the run read %d bytes (%.1f MB/s, WAL included)", fetched, elapsed, read, float64(read)/secs/(1<<20))
	s.checkRestore(t, dest, tsNew)

	os.WriteFile(rateFile, []byte("1M\n"), 0o644)
	dest2, tsNew2 := c.TempDir(t), c.TempDir(t)
	go func() {
		time.Sleep(3 * time.Second)
		tmp := rateFile + ".tmp"
		os.WriteFile(tmp, []byte("0\n"), 0o644)
		os.Rename(tmp, rateFile)
	}()
	start = time.Now()
	r = run(t, 10*time.Minute, env(), script, "-j", "2", "-v", "--max-rate-file", rateFile, "-T", s.tsDir+"="+tsNew2, c.DSN(), dest2)
	elapsed = time.Since(start).Seconds()
	if r.code != 0 {
		t.Fatalf("--max-rate-file: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "max rate 1.0 MB/s, following "+rateFile) || !strings.Contains(r.stderr, "max rate now unlimited (from "+rateFile+")") {
		t.Fatalf("--max-rate-file: the start at 1 MB/s and the change to unlimited are not said:\n%s", r.stderr)
	}
	fetched = summary(t, r.stderr).fetched
	if slow := float64(fetched) / (1 << 20); elapsed > slow/2 {
		t.Fatalf("--max-rate-file: %d bytes in %.1f s after the file said 0 at 3 s; 1 MB/s would take %.0f s", fetched, elapsed, slow)
	}
	t.Logf("--max-rate-file: 1 MB/s, then 0 at 3 s: %d bytes in %.1f s", fetched, elapsed)
	s.verifyPlain(t, dest2)
}

// SIGTERM and SIGINT to the script mid-run (a user's kill, a scheduler's timeout, Ctrl-C): the run stops
// within seconds, says so, dies of the signal as a shell loop expects, keeps DEST marked incomplete
// without backup_manifest, and leaves no process and no session behind. The run is slowed by --max-rate
// so that it is surely in the copy when the signal comes.
func TestSignalStopsTheRun(t *testing.T) {
	s := newSource(t, 5)
	c := s.c
	for sig, name := range map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"} {
		dest, tsNew := c.TempDir(t), c.TempDir(t)
		marker := "PGBB_TEST_MARK=" + name + strconv.Itoa(os.Getpid())
		cmd := exec.Command(script, "-j", "2", "--max-rate", "4M", "-T", s.tsDir+"="+tsNew, c.DSN(), dest)
		cmd.Env = env(marker)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		cmd.Process.Signal(sig)
		start := time.Now()
		cmd.Wait()
		took := time.Since(start)
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != sig || took > 15*time.Second {
			t.Fatalf("%v: the script ended with %v after %v, want death by %v within seconds:\n%s", sig, cmd.ProcessState, took, sig, stderr.String())
		}
		if !strings.Contains(lastLines(stderr.String(), 1), "interrupted by "+name) {
			t.Fatalf("%v: last line does not say the interruption:\n%s", sig, stderr.String())
		}
		if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
			t.Fatalf("%v: an interrupted run wrote backup_manifest", sig)
		}
		if _, err := os.Stat(filepath.Join(dest, ".pgbb-incomplete")); err != nil {
			t.Fatalf("%v: DEST is not marked incomplete: %v", sig, err)
		}
		expectNothingLeft(t, marker)
		expectNothingOnServer(t, c)
		t.Logf("%v: stopped in %v: %s", sig, took.Round(time.Millisecond), lastLines(stderr.String(), 1))
	}
}
