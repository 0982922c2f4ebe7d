package session

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// EnvSink names the Unix socket on which pgbb-xlog takes the chunk streams of the base copy's jobs: each
// connection carries one complete stream, whose records are forwarded whole into pgbb-xlog's output like
// those of the child's stdout. Jobs that write here need no output grouping (GNU parallel --pipe buffers
// each job's stdout in a temporary file until the job ends) and no stream files (xargs -P).
const EnvSink = "PGBB_SINK"

// sink listens in a new directory only this user may enter.
type sink struct {
	dir  string
	path string
	ln   *net.UnixListener
	wg   sync.WaitGroup // the accept loop and every forwarder
	errs chan error     // the first error of a forwarder (buffered)
	once sync.Once
}

func listenSink() (*sink, error) {
	dir, err := os.MkdirTemp("", "pgbb-xlog-")
	if err != nil {
		return nil, err
	}
	k := &sink{dir: dir, path: filepath.Join(dir, "sink"), errs: make(chan error, 1)}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: k.path, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // the directory goes as a whole in close
	k.ln = ln
	return k, nil
}

// serve accepts connections until the listener closes or its deadline passes, forwarding each with fwd.
func (k *sink) serve(fwd func(c net.Conn) error) {
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			c, err := k.ln.Accept()
			if err != nil {
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					if !errors.Is(err, net.ErrClosed) {
						k.fail(fmt.Errorf("accept on %s: %w", EnvSink, err))
					}
				}
				return
			}
			k.wg.Add(1)
			go func() {
				defer k.wg.Done()
				defer c.Close()
				if err := fwd(c); err != nil {
					k.fail(err)
				}
			}()
		}
	}()
}

// drain is called once the child has exited, so every job that connected has already done so: a connect on
// a Unix socket returns once the connection is queued. It accepts what is queued, waits for every stream to
// end and returns the first forwarding error.
func (k *sink) drain() error {
	if k.ln == nil {
		return nil // pgbb-pack's sink
	}
	// Accept returns queued connections at once and gives up only when the queue is empty.
	k.ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
	k.wg.Wait()
	select {
	case err := <-k.errs:
		return err
	default:
		return nil
	}
}

func (k *sink) fail(err error) {
	select {
	case k.errs <- err:
	default:
	}
}

func (k *sink) close() {
	k.once.Do(func() {
		k.ln.Close()
		os.RemoveAll(k.dir)
	})
}
