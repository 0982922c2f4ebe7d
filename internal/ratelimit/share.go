package ratelimit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// Env names the socket on which a run's bucket is served, in the environment of pgbb-xlog's children.
const Env = "PGBB_RATE"

// Grant is what a child asks the shared bucket for at a time, and spends locally.
const Grant = 64 << 10

// Serve answers requests for grants on l from b until l is closed: each request is 4 bytes, the amount
// (big-endian), answered by the same 4 bytes once b has been paid that amount.
func Serve(l net.Listener, b *Bucket) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var buf [4]byte
			for {
				if _, err := io.ReadFull(c, buf[:]); err != nil {
					return
				}
				n := binary.BigEndian.Uint32(buf[:])
				if n == 0 || n > 16<<20 {
					return
				}
				_ = b.Pay(int(n))
				if _, err := c.Write(buf[:]); err != nil {
					return
				}
			}
		}()
	}
}

// Remote is a child's share of the run's bucket, served on the socket at Path. It spends grants of the
// bucket locally and asks for the next when they are spent.
type Remote struct {
	Path    string
	mu      sync.Mutex
	c       net.Conn
	balance int64
}

// Pay spends n bytes of the grants held, asking the bucket for more when they do not cover it.
func (r *Remote) Pay(n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.balance -= int64(n)
	for r.balance < 0 {
		if r.c == nil {
			c, err := net.Dial("unix", r.Path)
			if err != nil {
				return fmt.Errorf("the run's rate limit (%s=%s): %w", Env, r.Path, err)
			}
			r.c = c
		}
		want := max(-r.balance, Grant)
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], uint32(want))
		if _, err := r.c.Write(buf[:]); err != nil {
			return fmt.Errorf("the run's rate limit (%s=%s): %w", Env, r.Path, err)
		}
		if _, err := io.ReadFull(r.c, buf[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("pgbb-xlog, which holds it, is gone")
			}
			return fmt.Errorf("the run's rate limit (%s=%s): %w", Env, r.Path, err)
		}
		r.balance += int64(binary.BigEndian.Uint32(buf[:]))
	}
	return nil
}

// FromEnv returns the share of the bucket named by PGBB_RATE, or nil when it is unset.
func FromEnv() Limiter {
	if p := os.Getenv(Env); p != "" {
		return &Remote{Path: p}
	}
	return nil
}

// Shared is a bucket served to a process's children.
type Shared struct {
	*Bucket
	dir string
	l   net.Listener
}

// Share serves b on a Unix socket in a new private directory and names it in this process's environment
// (PGBB_RATE), which its children inherit. Close ends it.
func Share(b *Bucket) (*Shared, error) {
	dir, err := os.MkdirTemp("", "pgbb-rate.")
	if err != nil {
		return nil, fmt.Errorf("rate limit: %w", err)
	}
	path := filepath.Join(dir, "rate")
	l, err := net.Listen("unix", path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("rate limit: %w", err)
	}
	os.Setenv(Env, path)
	go Serve(l, b)
	return &Shared{Bucket: b, dir: dir, l: l}, nil
}

// Close stops serving and removes the socket's directory.
func (s *Shared) Close() error {
	os.Unsetenv(Env)
	err := s.l.Close()
	os.RemoveAll(s.dir)
	return err
}

// Dial returns a dial function for the server connections of a run limited by l: each connection pays l
// for every read, and a TCP connection keeps a receive buffer of RecvBuffer, which bounds what the server
// has sent and the reader not yet paid for (without it, the kernel grows the buffer to several MB).
func Dial(d *net.Dialer, l Limiter) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if t, ok := c.(*net.TCPConn); ok {
			_ = t.SetReadBuffer(RecvBuffer)
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// RecvBuffer is the receive buffer of a limited TCP connection; MaxRead is the most one read takes.
const (
	RecvBuffer = 256 << 10
	MaxRead    = 64 << 10
)

type conn struct {
	net.Conn
	l Limiter
}

func (c *conn) Read(p []byte) (int, error) {
	if len(p) > MaxRead {
		p = p[:MaxRead]
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if perr := c.l.Pay(n); perr != nil && err == nil {
			err = perr
		}
	}
	return n, err
}
