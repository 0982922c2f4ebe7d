// Package walarchive keeps a directory of WAL segments that restore_command serves, for pgbb-xlog
// --continuous (docs/continuous-wal.md, section 1). A segment's name is in the directory complete or not
// at all: it is written as ".NAME.tmp", fsynced, renamed, and the directory fsynced. The segment being
// written is NAME.partial, written in place, as pg_receivewal keeps it; history files are written whole.
package walarchive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/pgbb/pgbb/internal/wal"
)

// PartialSuffix ends the name of the segment being written.
const PartialSuffix = ".partial"

// Dir is a directory of WAL files, locked by the process that opened it.
type Dir struct {
	path    string
	segSize uint64
	lock    *os.File
	tmps    []string // interrupted writers' files, for RemoveInterrupted
}

// Open prepares path, made (0700) when missing, for segments of segSize bytes. It refuses a directory that
// holds anything but WAL segments, history files, partial segments and what an interrupted writer left
// (".NAME.tmp"), and one that another process holds open (an exclusive flock on the directory). It
// changes nothing but making a missing directory: RemoveInterrupted clears the interrupted writers' files
// once the caller has checked the rest.
func Open(path string, segSize uint64) (*Dir, error) {
	if !wal.ValidSegmentSize(segSize) {
		return nil, fmt.Errorf("bad WAL segment size %d", segSize)
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, err
	}
	d := &Dir{path: path, segSize: segSize}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		name := e.Name()
		if inner, ok := tmpOf(name); ok && d.isWALName(inner) {
			d.tmps = append(d.tmps, name)
			continue
		}
		if !e.Type().IsRegular() || !d.isWALName(name) {
			return nil, fmt.Errorf("%s holds %q, which is no WAL segment, partial segment or history file", path, name)
		}
	}
	if d.lock, err = os.Open(path); err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(d.lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		d.lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		return nil, err
	}
	return d, nil
}

// RemoveInterrupted removes the files of writers interrupted before their rename: they were never
// complete.
func (d *Dir) RemoveInterrupted() error {
	for _, name := range d.tmps {
		if err := os.Remove(filepath.Join(d.path, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	d.tmps = nil
	return syncDir(d.path)
}

// ReadPartial returns the first n bytes of seg's partial file.
func (d *Dir) ReadPartial(seg wal.Segment, n uint64) ([]byte, error) {
	f, err := os.Open(filepath.Join(d.path, seg.Name()+PartialSuffix))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("%s%s: %w", seg.Name(), PartialSuffix, err)
	}
	return b, nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.lock.Close() }

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

// CheckSegment reads a complete segment back and checks every page of it (wal.CheckPages): what a restart
// resumes after must be the cluster's WAL, whole.
func (d *Dir) CheckSegment(seg wal.Segment, magic uint16, systemID uint64) error {
	b, err := os.ReadFile(filepath.Join(d.path, seg.Name()))
	if err != nil {
		return err
	}
	if uint64(len(b)) != d.segSize {
		return fmt.Errorf("%s: %d bytes, a segment has %d", filepath.Join(d.path, seg.Name()), len(b), d.segSize)
	}
	return wal.CheckPages(b, 0, wal.Expect{Magic: magic, SystemID: systemID, Segment: seg})
}

func tmpOf(name string) (string, bool) {
	if !strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".tmp") {
		return "", false
	}
	return strings.TrimSuffix(strings.TrimPrefix(name, "."), ".tmp"), true
}

func (d *Dir) isWALName(name string) bool {
	name = strings.TrimSuffix(name, PartialSuffix)
	_, err := wal.ParseSegmentName(name, d.segSize)
	return err == nil || wal.IsHistoryFileName(name)
}

// State is what the directory holds.
type State struct {
	Segments  []wal.Segment // complete, by segment number, then timeline
	Timelines []uint32      // of the history files, ascending
	Partials  []wal.Segment // segments with a NAME.partial
}

// Scan reads the directory.
func (d *Dir) Scan() (State, error) {
	var s State
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return s, err
	}
	for _, e := range ents {
		name := e.Name()
		if base, ok := strings.CutSuffix(name, PartialSuffix); ok {
			if seg, err := wal.ParseSegmentName(base, d.segSize); err == nil {
				s.Partials = append(s.Partials, seg)
			}
			continue
		}
		if seg, err := wal.ParseSegmentName(name, d.segSize); err == nil {
			info, err := e.Info()
			if err != nil {
				return s, err
			}
			if uint64(info.Size()) != d.segSize {
				return s, fmt.Errorf("%s: %d bytes, a segment has %d", filepath.Join(d.path, name), info.Size(), d.segSize)
			}
			s.Segments = append(s.Segments, seg)
			continue
		}
		if wal.IsHistoryFileName(name) {
			var tli uint32
			fmt.Sscanf(name, "%08X.history", &tli)
			s.Timelines = append(s.Timelines, tli)
		}
	}
	sort.Slice(s.Segments, func(i, j int) bool {
		a, b := s.Segments[i], s.Segments[j]
		return a.No < b.No || a.No == b.No && a.Timeline < b.Timeline
	})
	sort.Slice(s.Timelines, func(i, j int) bool { return s.Timelines[i] < s.Timelines[j] })
	return s, nil
}

// Last returns the newest complete segment: the highest segment number, on its newest timeline.
func (s State) Last() (wal.Segment, bool) {
	if len(s.Segments) == 0 {
		return wal.Segment{}, false
	}
	return s.Segments[len(s.Segments)-1], true
}

// Gap returns the first segment number missing between the first and the last complete segment. A
// timeline switch keeps the numbering: the switch's segment number is there on both timelines.
func (s State) Gap() (uint64, bool) {
	for i := 1; i < len(s.Segments); i++ {
		if prev, cur := s.Segments[i-1].No, s.Segments[i].No; cur > prev+1 {
			return prev + 1, true
		}
	}
	return 0, false
}

// Pending is a segment being written under its temporary name.
type Pending struct {
	d          *Dir
	name       string
	f          *os.File
	size, want uint64
}

// Create starts writing seg. Commit makes it part of the directory; Abort removes it.
func (d *Dir) Create(seg wal.Segment) (*Pending, error) {
	if seg.Size != d.segSize {
		return nil, fmt.Errorf("segment %s of %d bytes in a directory of %d-byte segments", seg.Name(), seg.Size, d.segSize)
	}
	return d.create(seg.Name(), seg.Size)
}

// create starts writing name, which must get want bytes.
func (d *Dir) create(name string, want uint64) (*Pending, error) {
	tmp := filepath.Join(d.path, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	return &Pending{d: d, name: name, f: f, want: want}, nil
}

// Write appends to the segment.
func (p *Pending) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	p.size += uint64(n)
	return n, err
}

// Commit checks that the file is whole, makes it durable under its name, and removes its partial.
func (p *Pending) Commit() error {
	if p.size != p.want {
		p.Abort()
		return fmt.Errorf("segment %s: %d bytes written, a segment has %d", p.name, p.size, p.want)
	}
	tmp := p.f.Name()
	if err := p.f.Sync(); err != nil {
		p.Abort()
		return err
	}
	if err := p.f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	final := filepath.Join(p.d.path, p.name)
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := syncDir(p.d.path); err != nil {
		return err
	}
	// the partial goes only once the whole segment is durable: one of the two is always there
	if err := os.Remove(final + PartialSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(p.d.path)
}

// Abort removes the unfinished segment.
func (p *Pending) Abort() {
	p.f.Close()
	os.Remove(p.f.Name())
}

// WritePartial writes b at off into seg's partial file, made when missing (as large as a segment, the rest
// zeros, as pg_receivewal pads it), and makes it durable.
func (d *Dir) WritePartial(seg wal.Segment, off uint64, b []byte) error {
	if off+uint64(len(b)) > d.segSize {
		return fmt.Errorf("partial segment %s: %d bytes at offset %d run past its end", seg.Name(), len(b), off)
	}
	path := filepath.Join(d.path, seg.Name()+PartialSuffix)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(int64(d.segSize)); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		return err
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return err
	}
	return syncDir(d.path)
}

// WriteHistory writes a timeline's history file whole, as a segment is: temporary name, fsync, rename.
func (d *Dir) WriteHistory(tli uint32, data []byte) error {
	p, err := d.create(wal.HistoryFileName(tli), uint64(len(data)))
	if err != nil {
		return err
	}
	if _, err := p.Write(data); err != nil {
		p.Abort()
		return err
	}
	return p.Commit()
}

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
