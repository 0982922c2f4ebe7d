package ratelimit

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"32", 32 * 1024}, {"500k", 500 * 1024}, {"10M", 10 * 1024 * 1024}, {" 10 M ", 10 * 1024 * 1024},
		{"1.5M", 1536 * 1024}, {"1024M", 1024 * 1024 * 1024}, {"0", 0}, {"0M", 0}, {"1048576", 1024 * 1024 * 1024},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "M", "10X", "10MB", "31", "1025M", "-5", "10 k k", "ten"} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
		}
	}
}

// fakeClock advances only when the bucket sleeps.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Sleep(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func TestBucketHoldsTheRate(t *testing.T) {
	clk := &fakeClock{now: time.Unix(0, 0)}
	b := NewBucket(1 << 20)
	b.now, b.sleep, b.last = clk.Now, clk.Sleep, clk.now
	// 10 MB paid in 64 kB reads at 1 MB/s: about 10 s of the fake clock, never less than the rate allows
	var paid int64
	for paid < 10<<20 {
		if err := b.Pay(MaxRead); err != nil {
			t.Fatal(err)
		}
		paid += MaxRead
		elapsed := clk.Now().Sub(time.Unix(0, 0)).Seconds()
		if allowed := elapsed*(1<<20) + (1<<20)*burst.Seconds() + MaxRead; float64(paid) > allowed {
			t.Fatalf("paid %d bytes after %.3f s, more than %.0f allowed", paid, elapsed, allowed)
		}
	}
	if e := clk.Now().Sub(time.Unix(0, 0)).Seconds(); e < 9.9 || e > 10.2 {
		t.Fatalf("10 MB at 1 MB/s took %.3f s", e)
	}
	// a higher rate applies at the next payment; 0 lifts the limit
	b.SetRate(10 << 20)
	t0 := clk.Now()
	for i := 0; i < 160; i++ { // 10 MB
		b.Pay(MaxRead)
	}
	if e := clk.Now().Sub(t0).Seconds(); e < 0.9 || e > 1.1 {
		t.Fatalf("10 MB at 10 MB/s took %.3f s", e)
	}
	b.SetRate(0)
	t0 = clk.Now()
	b.Pay(100 << 20)
	if clk.Now() != t0 {
		t.Fatal("an unlimited bucket made its payer wait")
	}
}

func TestSharedBucket(t *testing.T) {
	b := NewBucket(4 << 20)
	s, err := Share(b)
	if err != nil {
		t.Fatal(err)
	}
	path := os.Getenv(Env)
	if path == "" || !strings.HasPrefix(path, os.TempDir()) {
		t.Fatalf("%s = %q", Env, path)
	}
	// four children share 4 MB/s: 4 MB between them takes about a second, not a quarter of it
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := FromEnv()
			for j := 0; j < 16; j++ { // 1 MB each
				if err := r.Pay(MaxRead); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := time.Since(start).Seconds(); e < 0.7 {
		t.Fatalf("4 MB through a 4 MB/s bucket took %.3f s", e)
	}
	s.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	r := &Remote{Path: path}
	if err := r.Pay(1); err == nil || !strings.Contains(err.Error(), "rate limit") {
		t.Fatalf("a child without its bucket: %v", err)
	}
}

func TestFollow(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rate")
	if err := os.WriteFile(file, []byte("10M\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := ParseLimit("1M", file)
	if err != nil || l.Rate != 10<<20 {
		t.Fatalf("ParseLimit = %+v, %v", l, err)
	}
	b := NewBucket(l.Rate)
	var mu sync.Mutex
	var said, warned []string
	say := func(f string, a ...any) { mu.Lock(); said = append(said, f); mu.Unlock() }
	warn := func(f string, a ...any) { mu.Lock(); warned = append(warned, f); mu.Unlock() }
	ctx, cancel := contextWithCancel()
	defer cancel()
	go Follow(ctx, file, b, say, warn)
	wait := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("not within a second: %s", what)
			}
		}
	}
	os.WriteFile(file, []byte("50M"), 0o644)
	wait("50M applied", func() bool { return b.Rate() == 50<<20 })
	os.WriteFile(file, []byte("fast"), 0o644)
	wait("a warning for a bad value", func() bool { mu.Lock(); defer mu.Unlock(); return len(warned) == 1 })
	if b.Rate() != 50<<20 {
		t.Fatalf("a bad value changed the rate to %d", b.Rate())
	}
	os.WriteFile(file, []byte("0"), 0o644)
	wait("0 lifts the limit", func() bool { return b.Rate() == 0 })
	os.Remove(file)
	wait("a warning for a file gone", func() bool { mu.Lock(); defer mu.Unlock(); return len(warned) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if len(said) != 2 {
		t.Fatalf("changes said: %q", said)
	}

	if _, err := ParseLimit("", filepath.Join(dir, "none")); err != nil {
		t.Fatalf("a missing file at start: %v", err)
	}
	os.WriteFile(file, []byte("10X"), 0o644)
	if _, err := ParseLimit("", file); err == nil {
		t.Fatal("a bad file at start was taken")
	}
}

var _ net.Conn = (*conn)(nil)

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
