package sink

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// sameFile reports whether a and b are open on the same file.
func sameFile(t *testing.T, a, b *os.File) bool {
	t.Helper()
	var sa, sb syscall.Stat_t
	if err := syscall.Fstat(int(a.Fd()), &sa); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fstat(int(b.Fd()), &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func TestReferenceOfferCarriesEveryDirectory(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *os.File {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	sent := Offer{Direct: true, Reference: true, DirMode: 0o750, Dest: open("dest"),
		Tablespaces: map[uint32]*os.File{16384: open("ts1"), 16385: open("ts2")},
		Old:         open("old"), OldTablespaces: map[uint32]*os.File{16384: open("oldts1"), 17000: open("oldts3")}}
	a, b := unixPair(t)
	if err := SendOffer(a, sent); err != nil {
		t.Fatal(err)
	}
	got, err := ReadOffer(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if !got.Direct || !got.Reference || got.Resume || got.DirMode != 0o750 {
		t.Fatalf("flags: %+v", got)
	}
	if !sameFile(t, got.Dest, sent.Dest) || !sameFile(t, got.Old, sent.Old) {
		t.Fatal("the target or the reference came as another directory")
	}
	for _, m := range []struct{ sent, got map[uint32]*os.File }{{sent.Tablespaces, got.Tablespaces}, {sent.OldTablespaces, got.OldTablespaces}} {
		if len(m.got) != len(m.sent) {
			t.Fatalf("%d tablespaces, want %d", len(m.got), len(m.sent))
		}
		for oid, f := range m.sent {
			if g := m.got[oid]; g == nil || !sameFile(t, g, f) {
				t.Fatalf("tablespace %d came as another directory", oid)
			}
		}
	}
}

func TestOfferRefusesAReferenceWithResume(t *testing.T) {
	f, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, _ := unixPair(t)
	if err := SendOffer(a, Offer{Direct: true, Resume: true, Reference: true, DirMode: 0o700, Dest: f, Old: f}); err == nil {
		t.Fatal("a reference offer with resume was sent")
	}
	if err := SendOffer(a, Offer{Direct: false, Reference: true, DirMode: 0o700, Old: f}); err == nil {
		t.Fatal("a reference offer without direct writes was sent")
	}
}
