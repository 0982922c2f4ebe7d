package pack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// sink takes chunk streams on a Unix socket (--sink PATH, which pgbb-xlog hands to its child as
// PGBB_SINK): one complete stream per connection, from a fetch job. The jobs then need no shared stdout, no
// output grouping (GNU parallel --pipe buffers each job's output in a temporary file) and no stream files,
// and their bytes reach pgbb-pack without passing through pgbb-xlog. Records of every stream go to the one
// ledger under p.mu. A stream from the sink may not carry the backup's start or end or its WAL: only
// pgbb-xlog's stream (the inputs) may.
type sink struct {
	p    *packer
	ln   *net.UnixListener
	wg   sync.WaitGroup
	mu   sync.Mutex // guards conns and err
	conn map[net.Conn]bool
	err  error
	quit chan struct{} // closed by the first fail
}

func listenSink(p *packer, path string) (*sink, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	k := &sink{p: p, ln: ln, conn: map[net.Conn]bool{}, quit: make(chan struct{})}
	k.wg.Add(1)
	go k.accept()
	return k, nil
}

func (k *sink) accept() {
	defer k.wg.Done()
	for n := 1; ; n++ {
		c, err := k.ln.Accept()
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				if !errors.Is(err, net.ErrClosed) {
					k.fail(fmt.Errorf("accept on the sink: %w", err))
				}
			}
			return
		}
		k.mu.Lock()
		if k.err != nil {
			k.mu.Unlock()
			c.Close()
			continue
		}
		k.conn[c] = true
		k.mu.Unlock()
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			defer func() {
				k.mu.Lock()
				delete(k.conn, c)
				k.mu.Unlock()
				c.Close()
			}()
			// a job may connect before pgbb-xlog's backup start record has been read
			select {
			case <-k.p.started:
			case <-k.quit:
				return
			}
			if err := k.p.readStream(c, fmt.Sprintf("sink stream %d", n), true); err != nil {
				k.fail(err)
			}
		}()
	}
}

// fail keeps the first error and stops every stream.
func (k *sink) fail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err == nil {
		k.err = err
		close(k.quit)
	}
	k.ln.Close()
	for c := range k.conn {
		c.Close()
	}
}

// finish is called when pgbb-xlog's stream has ended, which it does only after the base copy exited: every
// job that connected has then done so (a Unix connect returns once the connection is queued). It accepts
// what is queued, waits for every stream to end and returns the first error.
func (k *sink) finish() error {
	// Accept returns queued connections at once; it gives up only when the queue stays empty.
	k.ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
	k.wg.Wait()
	k.ln.Close()
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// error returns the first error of a stream, if any.
func (k *sink) error() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err == errStopped {
		return nil
	}
	return k.err
}

var errStopped = errors.New("stopped")

// stop ends the sink after an error elsewhere and waits for its streams to let go of the ledger.
func (k *sink) stop() {
	k.fail(errStopped)
	k.wg.Wait()
}
