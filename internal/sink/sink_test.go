package sink

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Connections made before Finish are all handled, including those still queued when Finish runs.
func TestFinishTakesQueuedConnections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sink")
	var mu sync.Mutex
	got := map[string]bool{}
	block := make(chan struct{})
	k, err := Listen(path, func(c net.Conn, n int) error {
		<-block // the accept loop keeps running; the first handlers wait, later connections queue up
		b, err := io.ReadAll(c)
		mu.Lock()
		got[string(b)] = true
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		c, err := Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(strings.Repeat("x", i+1)))
		c.Close()
	}
	close(block)
	if err := k.Finish(); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d of %d streams handled", len(got), n)
	}
}

func TestHandlerErrorFailsTheSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sink")
	boom := errors.New("disk full")
	k, err := Listen(path, func(c net.Conn, n int) error { return boom })
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-k.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("the sink did not fail")
	}
	if !errors.Is(k.Err(), boom) || !errors.Is(k.Finish(), boom) {
		t.Fatalf("Err = %v", k.Err())
	}
}

// A job that starts before the socket exists waits for it.
func TestDialWaitsForTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sink")
	done := make(chan error, 1)
	go func() {
		c, err := Dial(path)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	k, err := Listen(path, func(c net.Conn, n int) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := k.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestStopEndsStreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sink")
	k, err := Listen(path, func(c net.Conn, n int) error {
		_, err := io.ReadAll(c) // returns when Stop closes the connection
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { k.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not end an open stream")
	}
	if k.Err() != nil {
		t.Fatalf("Err after Stop = %v", k.Err())
	}
}

// A job dialing a sink that has ended fails at once instead of waiting for the socket to come.
func TestDialFailsFastOnAnEndedSink(t *testing.T) {
	dir := t.TempDir()
	// the socket's directory is gone (pgbb-basebackup removed it after a failure)
	start := time.Now()
	if _, err := DialContext(context.Background(), filepath.Join(dir, "gone", "sink")); err == nil {
		t.Fatal("dial without a directory succeeded")
	}
	// a socket nobody listens on (its pgbb-pack was killed)
	path := filepath.Join(dir, "sink")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := DialContext(context.Background(), path); err == nil {
		t.Fatal("dial of a dead socket succeeded")
	}
	os.Remove(path)
	// not there yet, and the job is told to stop
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := DialContext(ctx, path); err == nil {
		t.Fatal("dial of a missing socket succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

// A sink that starts late is waited for; Closed fires when the sink ends the connection.
func TestDialWaitsForALateSinkAndSeesItEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sink")
	conns := make(chan net.Conn, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		k, err := Listen(path, func(c net.Conn, n int) error { conns <- c; time.Sleep(100 * time.Millisecond); return nil })
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(k.Stop)
	}()
	c, err := DialContext(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := Closed(c)
	<-conns
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Closed did not fire after the sink closed the connection")
	}
}
