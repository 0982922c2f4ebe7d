// Package sink takes chunk streams on a Unix socket: one complete stream per connection, from a fetch job.
// pgbb-pack --sink PATH listens (pgbb-xlog hands PATH to its child as PGBB_SINK); without it, pgbb-xlog
// listens itself and forwards what arrives. Jobs that write to a sink share no stdout, so GNU parallel has no
// output to group in temporary files and xargs -P jobs need no stream files.
package sink

import (
	"errors"
	"fmt"
	"net"
	"os"
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
		k.mu.Lock()
		delete(k.conns, c)
		k.mu.Unlock()
		c.Close()
		if err != nil {
			k.fail(err)
		}
	}()
}

// fail keeps the first error and ends every stream.
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

// Dial connects a job to the sink at path. A pgbb-pack that is still starting gets ten seconds to create
// the socket; a full accept queue (EAGAIN) is waited out the same way.
func Dial(path string) (*net.UnixConn, error) {
	var c net.Conn
	var err error
	for i := 0; i < 200; i++ {
		if c, err = net.Dial("unix", path); err == nil {
			uc := c.(*net.UnixConn)
			uc.SetWriteBuffer(buffer)
			return uc, nil
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EAGAIN) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, err
}
