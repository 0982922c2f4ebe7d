// Package sink takes chunk streams on a Unix socket: one complete stream per connection, from a fetch job.
// pgbb-pack --sink PATH listens (pgbb-xlog hands PATH to its child as PGBB_SINK); without it, pgbb-xlog
// listens itself and forwards what arrives. Jobs that write to a sink share no stdout, so GNU parallel has no
// output to group in temporary files and xargs -P jobs need no stream files.
package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Env is the variable that names the socket for the base copy's jobs.
const Env = "PGBB_SINK"

// buffer is the socket send buffer a job asks for: a deeper buffer lets the job and the reader run with
// fewer wake-ups (the kernel caps it at net.core.wmem_max).
const buffer = 4 << 20

// Sink accepts connections and hands each to a handler in its own goroutine.
type Sink struct {
	ln     *net.UnixListener
	handle func(c net.Conn, n int) error
	wg     sync.WaitGroup
	mu     sync.Mutex // guards conns, n and err
	conns  map[net.Conn]bool
	n      int
	err    error
	failed chan struct{} // closed by the first failure
}

var errStopped = errors.New("stopped")

// Listen creates the socket at path, readable and writable by this user only, and starts accepting.
func Listen(path string, handle func(c net.Conn, n int) error) (*Sink, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	k := &Sink{ln: ln, handle: handle, conns: map[net.Conn]bool{}, failed: make(chan struct{})}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					k.fail(fmt.Errorf("accept on %s: %w", path, err))
				}
				return
			}
			k.start(c)
		}
	}()
	return k, nil
}

// start runs the handler for one connection, unless the sink has failed.
func (k *Sink) start(c net.Conn) {
	k.mu.Lock()
	if k.err != nil {
		k.mu.Unlock()
		c.Close()
		return
	}
	k.n++
	n := k.n
	k.conns[c] = true
	k.wg.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.wg.Done()
		err := k.handle(c, n)
		if err != nil {
			// fail with c still among the connections, so that its job too is told to stop, and wait (at
			// most lingerWait) until it has closed its end: a job that writes into the target itself must
			// have stopped before the target is cleaned
			k.fail(err)
			io.Copy(io.Discard, c)
		}
		k.mu.Lock()
		delete(k.conns, c)
		k.mu.Unlock()
		c.Close()
	}()
}

// lingerWait bounds how long a stopped sink waits for its jobs to close their connections.
const lingerWait = 5 * time.Second

// fail keeps the first error and ends every stream: it shuts the connections' write side, which a job sees
// at once (Closed) and stops, and gives each job lingerWait to close its end, so that a handler that reads
// on (to wait for a job writing into the target itself) returns once the job has stopped.
func (k *Sink) fail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return
	}
	k.err = err
	close(k.failed)
	k.ln.Close()
	for c := range k.conns {
		if uc, ok := c.(*net.UnixConn); ok && uc.CloseWrite() == nil {
			uc.SetReadDeadline(time.Now().Add(lingerWait))
			continue
		}
		c.Close()
	}
}

// Failed is closed when a stream or the listener fails.
func (k *Sink) Failed() <-chan struct{} { return k.failed }

// Err returns the first failure, if any.
func (k *Sink) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err == errStopped {
		return nil
	}
	return k.err
}

// Finish is called once every job has exited (the base copy's command has ended): each job that connected
// has then done so, as a Unix connect returns once the connection is queued. Finish takes what is queued,
// closes the socket, waits for every stream to end and returns the first failure.
func (k *Sink) Finish() error {
	raw, err := k.ln.SyscallConn()
	if err != nil {
		return err
	}
	var queued []net.Conn
	var acceptErr error
	// the listener's descriptor is non-blocking: accept4 says EAGAIN as soon as the queue is empty
	cerr := raw.Control(func(fd uintptr) {
		for {
			nfd, _, err := syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if errors.Is(err, syscall.EAGAIN) {
				return
			}
			if err != nil {
				acceptErr = err
				return
			}
			f := os.NewFile(uintptr(nfd), "sink connection")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				acceptErr = err
				return
			}
			queued = append(queued, c)
		}
	})
	for _, c := range queued {
		k.start(c)
	}
	k.ln.Close()
	if cerr == nil {
		cerr = acceptErr
	}
	if cerr != nil {
		k.fail(fmt.Errorf("accept on the sink: %w", cerr))
	}
	k.wg.Wait()
	return k.Err()
}

// Stop ends the sink after a failure elsewhere and waits for every handler to return.
func (k *Sink) Stop() {
	k.fail(errStopped)
	k.wg.Wait()
}

// Dial is DialContext without a context.
func Dial(path string) (*net.UnixConn, error) { return DialContext(context.Background(), path) }

// Dial waits: how long for a socket not yet created or a full accept queue, how long for a socket nobody
// listens on, and between tries.
const (
	dialWait        = 10 * time.Second
	dialRefusedWait = 200 * time.Millisecond
	dialRetry       = 50 * time.Millisecond
)

// DialContext connects a job to the sink at path. A pgbb-pack that is still starting gets ten seconds to
// create the socket, and a full accept queue (EAGAIN) is waited out the same way; but a sink that has ended
// fails the dial at once, so that jobs started after a failure do not linger: the socket's directory is
// gone (pgbb-basebackup removes it when the run fails), or the socket is there and nobody listens
// (ECONNREFUSED past the moment between bind and listen). Cancelling ctx ends the wait.
func DialContext(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	start := time.Now()
	var refused time.Time // since when the socket is there and refuses
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			uc := c.(*net.UnixConn)
			uc.SetWriteBuffer(buffer)
			return uc, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			refused = time.Time{}
		}
		switch {
		case errors.Is(err, syscall.ENOENT):
			if _, serr := os.Stat(filepath.Dir(path)); serr != nil {
				return nil, err
			}
		case errors.Is(err, syscall.ECONNREFUSED):
			if refused.IsZero() {
				refused = time.Now()
			} else if time.Since(refused) >= dialRefusedWait {
				return nil, fmt.Errorf("%w (the sink has ended)", err)
			}
		case errors.Is(err, syscall.EAGAIN):
		default:
			return nil, err
		}
		if time.Since(start) >= dialWait {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(dialRetry):
		}
	}
}

// Closed returns a channel closed when the sink ends c: the reader never writes to a job, so a read returns
// only when the reader has closed the connection (it failed, or every stream was stopped) or c was closed
// here. A job watches it to stop at once rather than at its next write.
func Closed(c net.Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		var b [1]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				close(done)
				return
			}
		}
	}()
	return done
}
