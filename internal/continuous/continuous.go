// Package continuous is pgbb-xlog --continuous (docs/continuous-wal.md, section 1): it copies every
// completed WAL segment of a server into a directory kept by walarchive, in rounds, over an ordinary SQL
// connection, and holds the WAL it has not copied yet with a permanent physical replication slot that it
// advances only past what the directory holds durably.
package continuous

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/pgbb/pgbb/internal/testhook"
	"github.com/pgbb/pgbb/internal/wal"
	"github.com/pgbb/pgbb/internal/walarchive"
)

// Options configure a run.
type Options struct {
	DSN        string
	Dir        string
	Slot       string
	CreateSlot bool
	Delay      time.Duration // between rounds
	Log        *cliapp.Logger
}

// piece is how much of a segment one statement reads.
const piece = 4 << 20

// slotName is what the server takes as a slot name (slot.c, ReplicationSlotValidateName).
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

type loop struct {
	o    Options
	ctx  context.Context
	conn *server.Conn
	dir  *walarchive.Dir

	segSize  uint64
	systemID uint64
	magic    uint16

	next     uint64  // the first segment number the directory does not hold complete
	slotAt   wal.LSN // the slot's restart_lsn as last seen
	last     wal.Segment
	haveLast bool

	tli      uint32 // the timeline whose history is in hist
	hist     []wal.TimelineSwitch
	histDone uint32 // history files through this timeline are in the directory

	partial   wal.Segment // the segment whose flushed bytes are in its .partial
	partialAt uint64      // how many of them

	buf []byte
}

// Run copies WAL until ctx ends (SIGINT or SIGTERM: a clean stop, nil) or an error that a new connection
// cannot cure.
func Run(ctx context.Context, o Options) error {
	if !slotName.MatchString(o.Slot) {
		return cliapp.Usage("a slot name is 1 to 63 lower-case letters, digits and underscores", "bad slot name %q", o.Slot)
	}
	l := &loop{o: o, ctx: ctx}
	if err := l.connect(true); err != nil {
		return err
	}
	defer func() { l.conn.Close() }()
	// everything is checked before the slot is made or anything in the directory changes
	missing, err := l.checkSlot(o.CreateSlot)
	if err != nil {
		return err
	}
	if l.dir, err = walarchive.Open(o.Dir, l.segSize); err != nil {
		return cliapp.Usage("give an empty directory, or one that pgbb-xlog --continuous keeps", "%v", err)
	}
	defer l.dir.Close()
	if err := l.resume(); err != nil {
		return err
	}
	if missing {
		if err := l.createSlot(); err != nil {
			return err
		}
	}
	restart := uint64(l.slotAt) / l.segSize
	switch {
	case !l.haveLast:
		l.next = restart
	case restart > l.next:
		err := cliapp.WithHint(fmt.Errorf("%s ends with segment %s, but slot %s reserves WAL only from %s: the WAL between is no longer on the server",
			o.Dir, l.last.Name(), o.Slot, l.slotAt), "a gap cannot be filled: start a new directory and a new base backup")
		if missing {
			// the slot made a moment ago would pin WAL for nothing
			if derr := l.conn.DropSlot(ctx, o.Slot); derr != nil {
				o.Log.Warn("drop the replication slot %s made by this run: %v", o.Slot, derr)
			}
		}
		return err
	}
	if err := l.dir.RemoveInterrupted(); err != nil {
		return err
	}
	o.Log.Note("copying WAL into %s from segment %s on, slot %s at %s", o.Dir, l.segmentName(l.next), o.Slot, l.slotAt)
	for {
		err := l.round()
		if err != nil && ctx.Err() == nil {
			if !server.Retryable(err) {
				return err
			}
			o.Log.Warn("%v; connecting again", err)
			if err := l.reconnect(); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			o.Log.Note("stopped; %s holds WAL through segment %s", o.Dir, l.segmentName(l.next-1))
			return nil
		case <-time.After(o.Delay):
		}
	}
}

func (l *loop) segmentName(no uint64) string {
	tli := wal.TimelineOf(wal.LSN((no+1)*l.segSize-1), l.tli, l.hist)
	return wal.Segment{Timeline: tli, No: no, Size: l.segSize}.Name()
}

// connect opens the connection, learns the cluster (first) or checks it is the same one (later), and
// makes sure of the slot.
func (l *loop) connect(first bool) error {
	conn, err := server.Connect(l.ctx, l.o.DSN, "pgbb-xlog", true)
	if err != nil {
		return server.ConnectFailed(err, "")
	}
	segSize, err := conn.WALSegmentSize(l.ctx)
	if err != nil {
		conn.Close()
		return err
	}
	_, info, err := conn.ReadControlFile(l.ctx)
	if err != nil {
		conn.Close()
		return cliapp.WithHint(err, "the role needs pg_read_server_files, or EXECUTE on pg_read_binary_file(text, bigint, bigint, boolean)")
	}
	if !first && (info.SystemID != l.systemID || segSize != l.segSize) {
		conn.Close()
		return fmt.Errorf("the server is now cluster %d, not %d", info.SystemID, l.systemID)
	}
	l.conn, l.segSize, l.systemID, l.magic = conn, segSize, info.SystemID, conn.Major.WALPageMagic
	return nil
}

// reconnect connects again every Delay until it works, ctx ends, or the failure is not one of the
// connection.
func (l *loop) reconnect() error {
	l.conn.Close()
	for {
		select {
		case <-l.ctx.Done():
			return nil
		case <-time.After(l.o.Delay):
		}
		err := l.connect(false)
		if err == nil {
			if _, err = l.checkSlot(false); err == nil {
				l.o.Log.Note("connected again")
				return nil
			}
			l.conn.Close()
		}
		if l.ctx.Err() != nil {
			return nil
		}
		if !server.Retryable(err) {
			return err
		}
	}
}

// checkSlot finds the slot and checks that it can hold the WAL: physical, permanent, free, reserving WAL
// that is not lost. A slot that does not exist is an error, unless create: then missing is true and
// createSlot makes it.
func (l *loop) checkSlot(create bool) (missing bool, err error) {
	name := l.o.Slot
	s, found, err := l.conn.Slot(l.ctx, name)
	if err != nil {
		return false, err
	}
	if !found && create {
		return true, nil
	}
	return false, l.slotUsable(name, s, found)
}

// createSlot makes the slot, which reserves WAL from the server's position on.
func (l *loop) createSlot() error {
	name := l.o.Slot
	if err := l.conn.CreatePermanentSlot(l.ctx, name); err != nil {
		if server.ErrorCode(err) == "42501" {
			return cliapp.WithHint(fmt.Errorf("create replication slot %s: %w", name, err), "give the role REPLICATION: ALTER ROLE … REPLICATION")
		}
		return fmt.Errorf("create replication slot %s: %w", name, err)
	}
	l.o.Log.Note("created the physical replication slot %s", name)
	s, found, err := l.conn.Slot(l.ctx, name)
	if err != nil {
		return err
	}
	return l.slotUsable(name, s, found)
}

func (l *loop) slotUsable(name string, s server.Slot, found bool) error {
	switch {
	case !found && l.slotAt != 0:
		return cliapp.WithHint(fmt.Errorf("replication slot %s was dropped", name), "WAL not yet copied may be gone: start a new directory and a new base backup")
	case !found:
		return cliapp.Usage("create it with --create-slot (or pg_create_physical_replication_slot('"+name+"', true))", "replication slot %s does not exist", name)
	case !s.Physical:
		return cliapp.Usage("give a physical slot", "replication slot %s is a logical slot", name)
	case s.Temporary:
		return cliapp.Usage("give a permanent slot: a temporary one belongs to another session", "replication slot %s is temporary", name)
	case s.ActivePID != 0:
		return cliapp.WithHint(fmt.Errorf("replication slot %s is in use by process %d", name, s.ActivePID), "each copier needs its own slot: is another pgbb-xlog --continuous or pg_receivewal using it?")
	case s.WALStatus == "lost":
		return cliapp.WithHint(fmt.Errorf("replication slot %s has lost WAL it reserved (max_slot_wal_keep_size)", name), "start a new directory and a new base backup; raise max_slot_wal_keep_size")
	case s.RestartLSN == 0:
		return cliapp.Usage("create the slot with WAL reserved: pg_create_physical_replication_slot(name, true), or --create-slot with a new name", "replication slot %s reserves no WAL", name)
	}
	l.slotAt = s.RestartLSN
	return nil
}

// resume finds where the directory ends and checks it against the server: the last segment whole and of
// this cluster, and on the server's history, not on a branch it left.
func (l *loop) resume() error {
	st, err := l.dir.Scan()
	if err != nil {
		return cliapp.Usage("give an empty directory, or one that pgbb-xlog --continuous keeps", "%v", err)
	}
	if no, gap := st.Gap(); gap {
		return cliapp.Usage("a directory with a gap cannot serve a restore past it: start a new directory and a new base backup",
			"%s lacks segment number %d (%X/%X)", l.o.Dir, no, uint32(no*l.segSize>>32), uint32(no*l.segSize))
	}
	_, rec, err := l.conn.WALPosition(l.ctx)
	if err != nil {
		return err
	}
	if err := l.timeline(rec); err != nil {
		return err
	}
	last, ok := st.Last()
	if !ok {
		return nil
	}
	if err := l.dir.CheckSegment(last, l.magic, l.systemID); err != nil {
		return cliapp.Usage("the directory holds WAL of another cluster, or a damaged segment: give another directory", "%s: %v", l.o.Dir, err)
	}
	if want := wal.TimelineOf(last.End()-1, l.tli, l.hist); want != last.Timeline {
		return cliapp.Usage("the directory follows another branch of the cluster's history: give another directory",
			"%s ends with %s, but the server's timeline %d has that WAL on timeline %d", l.o.Dir, last.Name(), l.tli, want)
	}
	l.last, l.haveLast, l.next = last, true, last.No+1
	return nil
}

// round copies every segment the server's position has passed, advances the slot past them, and writes
// the current segment's flushed bytes into its partial.
func (l *loop) round() error {
	pos, rec, err := l.conn.WALPosition(l.ctx)
	if err != nil {
		return err
	}
	if err := l.timeline(rec); err != nil {
		return err
	}
	if err := l.copyHistory(); err != nil {
		return err
	}
	for {
		seg := wal.Segment{No: l.next, Size: l.segSize}
		if seg.End() > pos {
			break
		}
		seg.Timeline = wal.TimelineOf(seg.End()-1, l.tli, l.hist)
		if err := l.copySegment(seg); err != nil {
			return err
		}
		l.last, l.haveLast = seg, true
		l.next++
		// after each segment, not once a round: a round that copies several (after a pause, a
		// reconnection) would otherwise hold the slot a segment or more behind DIR meanwhile
		if err := l.advance(); err != nil {
			return err
		}
	}
	start := wal.LSN(l.next * l.segSize)
	if l.slotAt < start {
		if err := l.advance(); err != nil {
			return err
		}
	} else if _, err := l.checkSlot(false); err != nil {
		return err
	}
	if pos > start {
		return l.writePartial(pos)
	}
	return nil
}

// advance moves the slot to the start of the first segment DIR lacks, when it is behind it.
func (l *loop) advance() error {
	start := wal.LSN(l.next * l.segSize)
	if l.slotAt >= start {
		return nil
	}
	var err error
	if l.slotAt, err = l.conn.AdvanceSlot(l.ctx, l.o.Slot, start); err != nil {
		return fmt.Errorf("advance replication slot %s to %s: %w", l.o.Slot, start, err)
	}
	return nil
}

// timeline learns the server's current timeline and its history: a primary's from its insert timeline; a
// standby's (pg_walfile_name fails in recovery) as the newest of its checkpoint's timeline and the
// history files in its pg_wal, which a standby fetches before it follows a new timeline.
func (l *loop) timeline(rec bool) error {
	var tli uint32
	var err error
	if !rec {
		if tli, err = l.conn.InsertTimeline(l.ctx); err != nil {
			return err
		}
	} else {
		_, info, err := l.conn.ReadControlFile(l.ctx)
		if err != nil {
			return err
		}
		tli = info.CheckpointTimeline
		entries, err := l.conn.ListDir(l.ctx, "pg_wal")
		if err != nil {
			return err
		}
		for _, e := range entries {
			if t, ok := historyTimeline(e.Name); ok && !e.IsDir && t > tli {
				tli = t
			}
		}
	}
	if tli == l.tli {
		return nil
	}
	if tli < l.tli {
		return fmt.Errorf("the server went back from timeline %d to %d", l.tli, tli)
	}
	var hist []wal.TimelineSwitch
	if tli > 1 {
		data, err := l.readHistory(tli)
		if err != nil {
			return err
		}
		if hist, err = wal.ParseHistory(data); err != nil {
			return fmt.Errorf("%s: %w", wal.HistoryFileName(tli), err)
		}
	}
	if l.tli != 0 {
		l.o.Log.Note("the server is on timeline %d", tli)
	}
	l.tli, l.hist = tli, hist
	return nil
}

func historyTimeline(name string) (uint32, bool) {
	if !wal.IsHistoryFileName(name) {
		return 0, false
	}
	t, err := strconv.ParseUint(name[:8], 16, 32)
	return uint32(t), err == nil
}

func (l *loop) readHistory(tli uint32) ([]byte, error) {
	path := "pg_wal/" + wal.HistoryFileName(tli)
	data, missing, err := l.conn.ReadFile(l.ctx, nil, path, 0, 1<<24)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if missing {
		return nil, fmt.Errorf("the server is on timeline %d but has no %s", tli, path)
	}
	return data, nil
}

// copyHistory puts the history file of every timeline after the first, through the current one, into the
// directory before any segment of the current timeline: recovery looks for the newest timeline by asking
// for each history file in turn (timeline.c, findNewestTimeLine). An ancestor's file the server no longer
// has is skipped; the current one's is required.
func (l *loop) copyHistory() error {
	for t := max(l.histDone+1, 2); t <= l.tli; t++ {
		path := "pg_wal/" + wal.HistoryFileName(t)
		data, missing, err := l.conn.ReadFile(l.ctx, nil, path, 0, 1<<24)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if missing && t == l.tli {
			return fmt.Errorf("the server is on timeline %d but has no %s", t, path)
		}
		if !missing {
			if err := l.dir.WriteHistory(t, data); err != nil {
				return err
			}
			l.o.Log.Info("copied %s", path)
		}
	}
	l.histDone = max(l.histDone, l.tli)
	return nil
}

// copySegment writes one complete segment into the directory, whole or not at all. The bytes already in
// its partial (checked when written, and final: they were before the flush position) are taken from there;
// the rest is read from the server.
func (l *loop) copySegment(seg wal.Segment) error {
	path := "pg_wal/" + seg.Name()
	exp := wal.Expect{Magic: l.magic, SystemID: l.systemID, Segment: seg}
	p, err := l.dir.Create(seg)
	if err != nil {
		return err
	}
	off := uint64(0)
	if l.partial == seg && l.partialAt >= wal.PageSize {
		n := l.partialAt / wal.PageSize * wal.PageSize
		b, err := l.dir.ReadPartial(seg, n)
		if err == nil {
			_, err = p.Write(b)
		}
		if err != nil {
			p.Abort()
			return err
		}
		off = n
	}
	for off < seg.Size {
		n := min(piece, seg.Size-off)
		data, err := l.read(seg, path, off, n)
		if err == nil {
			err = wal.CheckPages(data, off, exp)
		}
		if err == nil {
			_, err = p.Write(data)
		}
		if err != nil {
			p.Abort()
			return err
		}
		off += n
		testhook.Pause("continuous-segment")
	}
	if err := p.Commit(); err != nil {
		return err
	}
	l.o.Log.Info("copied %s", seg.Name())
	return nil
}

func (l *loop) read(seg wal.Segment, path string, off, n uint64) ([]byte, error) {
	data, missing, err := l.conn.ReadFile(l.ctx, l.buf[:0], path, int64(off), int64(n))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	l.buf = data
	if missing {
		return nil, cliapp.WithHint(fmt.Errorf("WAL segment %s is not on the server", seg.Name()),
			"the slot holds WAL on the server it is on: on a standby, the standby's own pg_wal")
	}
	if uint64(len(data)) != n {
		return nil, fmt.Errorf("WAL segment %s: read %d bytes at offset %d, want %d", seg.Name(), len(data), off, n)
	}
	return data, nil
}

// writePartial brings the current segment's partial up to pos, rewriting from the page where it ended
// (that page's tail was not flushed then). The last page may be incomplete: its header is checked on a
// copy padded with zeros.
func (l *loop) writePartial(pos wal.LSN) error {
	seg := wal.Segment{No: l.next, Size: l.segSize}
	seg.Timeline = wal.TimelineOf(pos-1, l.tli, l.hist)
	if seg != l.partial {
		l.partial, l.partialAt = seg, 0
	}
	end := uint64(pos - seg.Start())
	if end <= l.partialAt {
		return nil
	}
	from := l.partialAt / wal.PageSize * wal.PageSize
	path := "pg_wal/" + seg.Name()
	data, err := l.read(seg, path, from, end-from)
	if err != nil {
		return err
	}
	exp := wal.Expect{Magic: l.magic, SystemID: l.systemID, Segment: seg}
	whole := uint64(len(data)) / wal.PageSize * wal.PageSize
	if err := wal.CheckPages(data[:whole], from, exp); err != nil {
		return err
	}
	if tail := data[whole:]; len(tail) > 0 {
		page := make([]byte, wal.PageSize)
		copy(page, tail)
		if err := wal.CheckPages(page, from+whole, exp); err != nil {
			return err
		}
	}
	if err := l.dir.WritePartial(seg, from, data); err != nil {
		return err
	}
	l.partialAt = end
	return nil
}
