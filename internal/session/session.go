// Package session holds a backup session: it starts a non-exclusive backup, runs the base copy as a child
// process, copies WAL in a loop, and after the child succeeds copies pg_control, stops the backup and copies
// the remaining WAL. It writes its own records and forwards the child's whole into one chunk stream.
//
// Record order on the output, for one producer "pgbb-xlog": B, X, then WAL chunks and outcomes interleaved
// with the child's forwarded records, then (only after the child exited 0 and its output ended) the
// pg_control chunk and outcome, the remaining WAL and history files, E, Z. Without E the backup is
// unfinished and pgbb-pack refuses it.
package session

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/pgbb/pgbb/internal/backupid"
	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/pgbb/pgbb/internal/sink"
	"github.com/pgbb/pgbb/internal/testhook"
	"github.com/pgbb/pgbb/internal/timeline"
	"github.com/pgbb/pgbb/internal/wal"
)

// Options for Run.
type Options struct {
	DSN      string
	Label    string
	Fast     bool          // -c fast: immediate checkpoint at start
	Delay    time.Duration // pause between WAL copy rounds
	Compress string        // codec of the WAL chunks, for compress.ParseCodec: "none" (or ""), "xz" or "zstd"
	Level    int           // the codec's level (compress.ParseLevel); 0 means its default
	NoSlot   bool          // do not create the temporary replication slot
	Child    []string      // the base copy command; empty: wait for "stop" on stdin
	Log      *cliapp.Logger
}

// chunk is the bytes asked for per read of a WAL segment (a multiple of the page size).
const chunk = 4 << 20

// Environment variables set for the child.
const (
	EnvBackupID = "PGBB_BACKUP_ID"
	EnvDSN      = "PGBB_DSN"
)

type session struct {
	ctx        context.Context
	o          Options
	conn       *server.Conn
	sw         *chunkstream.Writer
	out        *lockedWriter
	start      chunkstream.BackupStart
	magic      uint16
	nextSeg    wal.Segment
	slot       string
	codec      byte
	comp       *compress.ChunkCompressor // reused for every chunk: memory stays flat
	buf        []byte
	zbuf       []byte
	zeroChunks map[int]zeroChunk // writeZeros' frames by size
	stop       wal.LSN           // pg_backup_stop's LSN, once returned
	stdout     *os.File
	standby    bool // the server was in recovery when the backup started
}

// Run holds one backup session and writes the chunk stream to stdout. It returns nil only when the backup is
// complete: the child succeeded, pg_backup_stop returned and every WAL segment from start to stop was copied
// and checked. On any error the connection is closed, which makes the server abandon the backup and drop the
// temporary slot, and the child's process group is sent SIGTERM.
func Run(ctx context.Context, o Options, stdin io.Reader, stdout *os.File) error {
	if o.Delay <= 0 {
		o.Delay = time.Second
	}
	// every round uses the session's connection, so a dead session fails the run within one round; the
	// server abandons a backup whose session died, and that is never retried (docs/resume.md)
	o.Delay = min(o.Delay, maxDelay)
	s := &session{ctx: ctx, o: o, stdout: stdout}
	var err error
	if s.codec, err = compress.ParseCodec(o.Compress); err != nil {
		return cliapp.Usage("use --compress "+compress.CodecNames, "%v", err)
	}
	if s.comp, err = compress.NewChunkCompressor(s.codec, o.Level); err != nil {
		return cliapp.Usage(compress.LevelHelp(s.codec), "%v", err)
	}
	if err := cliapp.RefuseTerminal(stdout, "a chunk stream"); err != nil {
		return err
	}
	// A reader that went away (pgbb-pack killed) must end the backup through an error on write, which also
	// stops the child, rather than a SIGPIPE that would leave the child running.
	signal.Ignore(syscall.SIGPIPE)
	if hosts := server.Unverified(o.DSN); len(hosts) > 0 {
		o.Log.Warn("the connection to %s is not verified (sslmode below verify-full): the backup's data and the password cross the network open to whoever is on the path; use sslmode=verify-full with sslrootcert", strings.Join(hosts, ", "))
	}
	conn, err := server.Connect(ctx, o.DSN, "pgbb-xlog", true)
	if err != nil {
		return server.ConnectFailed(err, "")
	}
	s.conn = conn
	defer conn.Close()
	s.out = &lockedWriter{w: bufio.NewWriterSize(stdout, 1<<20)}
	if err := s.begin(); err != nil {
		return err
	}
	if len(o.Child) == 0 {
		err = s.waitForStop(stdin)
	} else {
		err = s.runChild()
	}
	if err == nil {
		err = s.finish()
	}
	if errors.Is(err, syscall.EPIPE) {
		// pgbb-pack went away and says why
		return cliapp.Consequence(fmt.Errorf("the reader of the stream (pgbb-pack) has gone: %w", err))
	}
	if err != nil && server.ErrorCode(err) == "57P01" && s.slot != "" {
		return cliapp.WithHint(err, "the server ended the backup session: an administrator, a shutdown, or the backup's replication slot "+
			s.slot+" passing max_slot_wal_keep_size (then the WAL the backup needs is gone)")
	}
	return err
}

func (s *session) begin() error {
	ctx := s.ctx
	var err error
	if s.standby, err = s.conn.InRecovery(ctx); err != nil {
		return err
	}
	if s.standby {
		s.o.Log.Info("the server is a standby: WAL is copied as far as it has replayed")
	}
	s.magic = s.conn.Major.WALPageMagic
	segSize, err := s.conn.WALSegmentSize(ctx)
	if err != nil {
		return err
	}
	if !wal.ValidSegmentSize(segSize) {
		return fmt.Errorf("unexpected wal_segment_size %d", segSize)
	}
	mode, err := s.conn.DataDirectoryMode(ctx)
	if err != nil {
		return err
	}
	_, info, err := s.readControl()
	if err != nil {
		return err
	}
	tbs, err := s.conn.Tablespaces(ctx)
	if err != nil {
		return err
	}
	if !s.o.NoSlot {
		ok, err := s.conn.CanCreateSlot(ctx)
		if err != nil {
			return err
		}
		if ok {
			s.slot = fmt.Sprintf("pgbb_%d_%d", os.Getpid(), time.Now().Unix())
			if err := s.conn.CreateTemporarySlot(ctx, s.slot); err != nil {
				return fmt.Errorf("create temporary replication slot: %w", err)
			}
		} else {
			s.o.Log.Warn("role %q lacks REPLICATION: no slot pins the WAL, and a checkpoint during the backup may remove WAL before it is copied (the backup then fails)", s.conn.User)
			s.o.Log.Hint("ALTER ROLE %s REPLICATION, or raise wal_keep_size above the WAL written during a backup", s.conn.User)
		}
	}
	label := s.o.Label
	if label == "" {
		label = "pgbb base backup"
	}
	timeline.Mark("start backup (checkpoint)")
	startLSN, err := s.conn.StartBackup(ctx, label, s.o.Fast)
	timeline.Mark("backup started")
	if err != nil {
		return cliapp.WithHint(fmt.Errorf("start backup: %w", err), "the role needs EXECUTE on "+s.conn.Major.StartFunction())
	}
	tli, err := s.startTimeline(startLSN)
	if err != nil {
		return err
	}
	var nonce [4]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	id := backupid.New(info.SystemID, tli, uint64(startLSN), binary.BigEndian.Uint32(nonce[:]))
	s.start = chunkstream.BackupStart{BackupID: id, SystemID: info.SystemID, Timeline: uint32(tli), StartLSN: uint64(startLSN),
		WALSegmentSize: uint32(segSize), ServerVersion: uint32(s.conn.Version), DirMode: mode, Label: label}
	for _, t := range tbs {
		s.start.Tablespaces = append(s.start.Tablespaces, chunkstream.Tablespace{OID: t.OID, Location: t.Location})
	}
	s.nextSeg = wal.SegmentOf(startLSN, uint32(tli), segSize)
	if s.sw, err = chunkstream.NewWriter(s.out, "pgbb-xlog", id); err != nil {
		return err
	}
	if err := s.sw.WriteBackupStart(s.start); err != nil {
		return err
	}
	s.o.Log.Info("backup %s started at %s", id, startLSN)
	return s.flush()
}

func (s *session) flush() error { return s.out.Flush() }

// startTimeline returns the timeline of the backup's start LSN. pg_walfile_name fails during recovery, so
// the timeline comes from the server's files on a primary and a standby alike: pg_control read after
// pg_backup_start names the timeline of the latest checkpoint or restartpoint, which is the start's or a
// later one, and that timeline's history file says where each earlier one ended (timeline.c).
func (s *session) startTimeline(start wal.LSN) (uint32, error) {
	_, info, err := s.readControl()
	if err != nil {
		return 0, err
	}
	current := info.CheckpointTimeline
	if current == 0 {
		return 0, errors.New("pg_control names no timeline")
	}
	if current == 1 {
		return 1, nil
	}
	path := "pg_wal/" + wal.HistoryFileName(current)
	data, missing, err := s.conn.ReadFile(s.ctx, nil, path, 0, 1<<24)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	if missing {
		return 0, fmt.Errorf("the server is on timeline %d but has no %s", current, path)
	}
	hist, err := wal.ParseHistory(data)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return wal.TimelineOf(start, current, hist), nil
}

// lockedWriter serialises whole-record writes (each chunkstream record is one Write) with flushes.
type lockedWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}

// readControl reads pg_control until its CRC is valid (server.ReadControlFile), with a hint when the role may
// not read it.
func (s *session) readControl() ([]byte, controlfile.Info, error) {
	b, info, err := s.conn.ReadControlFile(s.ctx)
	if server.ErrorCode(err) == "42501" {
		err = cliapp.WithHint(err, "GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO the backup role")
	}
	return b, info, err
}

func (s *session) childEnv(sinkPath string) []string {
	env := os.Environ()
	env = append(env, EnvBackupID+"="+s.start.BackupID)
	if os.Getenv(sink.Env) == "" && sinkPath != "" {
		env = append(env, sink.Env+"="+sinkPath)
	}
	if s.o.DSN != "" {
		env = append(env, EnvDSN+"="+s.o.DSN)
	}
	return env
}

// runChild runs the base copy, forwarding its records, and copies WAL until it has exited and its output
// has ended.
func (s *session) runChild() error {
	// With PGBB_SINK already set, pgbb-pack --sink listens there and the jobs' streams bypass this process;
	// else this process takes them and forwards them.
	sinkPath := os.Getenv(sink.Env)
	var k *sink.Sink
	var sinkFailed <-chan struct{} // nil: never ready
	if sinkPath == "" {
		dir, err := os.MkdirTemp("", "pgbb-xlog-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		sinkPath = filepath.Join(dir, "sink")
		forward := func(c net.Conn, n int) error {
			// the data passes through here to pgbb-pack's input: the jobs stream it (no direct writes)
			if err := sink.SendOffer(c, sink.Offer{DirMode: s.start.DirMode}); err != nil {
				return err
			}
			return s.forward(c, fmt.Sprintf("sink stream %d", n))
		}
		if k, err = sink.Listen(sinkPath, forward); err != nil {
			// the child may not need one (jobs writing to stdout or to stream files)
			s.o.Log.Warn("no sink for the base copy's jobs (%v): they must write to stdout or to stream files", err)
			sinkPath, k = "", nil
		} else {
			defer k.Stop()
			sinkFailed = k.Failed()
		}
	}
	cmd := exec.Command(s.o.Child[0], s.o.Child[1:]...)
	cmd.Env = s.childEnv(sinkPath)
	cmd.Stdin = os.Stdin
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.o.Child[0], err)
	}
	pgid := cmd.Process.Pid
	timeline.Mark("child started")
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- s.forward(pipe, "child output") }()
	waitDone := make(chan error, 1)
	waiting := false
	startWait := func() {
		if !waiting {
			waiting = true
			go func() { waitDone <- cmd.Wait() }()
		}
	}
	var fwdErr, waitErr error
	fwdOpen, childRunning := true, true
	// stop ends the base copy after a failure and returns once nothing of its process group is left: the
	// jobs under xargs are in it (GNU parallel ends its own jobs on SIGTERM), and none may go on using the
	// server or the sink after this process has exited.
	stop := func() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		startWait()
		if childRunning {
			select {
			case waitErr = <-waitDone:
			case <-time.After(stopGrace):
				syscall.Kill(-pgid, syscall.SIGKILL)
				waitErr = <-waitDone
			}
			childRunning = false
		}
		awaitGroupExit(pgid)
	}
	tick := time.NewTicker(s.o.Delay)
	defer tick.Stop()
	for fwdOpen || childRunning {
		select {
		case fwdErr = <-fwdDone:
			fwdOpen = false
			if fwdErr != nil {
				stop()
			} else if childRunning {
				startWait()
			}
		case waitErr = <-waitDone:
			childRunning = false
		case <-sinkFailed:
			stop()
			return k.Err()
		case <-tick.C:
			if readerGone(s.stdout) {
				stop()
				return cliapp.Consequence(errors.New("the reader of the stream (pgbb-pack) has gone"))
			}
			if err := s.copyCompletedWAL(); err != nil {
				if s.ctx.Err() == nil && !cliapp.IsConsequence(err) {
					err = cliapp.Own(err) // found before any signal: stopping the copy may bring one
				}
				stop()
				return err
			}
		case <-s.ctx.Done():
			stop()
			return s.ctx.Err()
		}
	}
	timeline.Mark("child ended")
	if fwdErr != nil {
		return fmt.Errorf("child output: %w", fwdErr)
	}
	if waitErr != nil {
		stop() // what the child left behind (xargs does not wait for its jobs after a job's exit 255)
		return childFailed(s.o.Child[0], waitErr)
	}
	if k != nil {
		return k.Finish()
	}
	return nil
}

// maxDelay bounds the pause between WAL rounds, which is also how often the session is checked alive.
const maxDelay = 30 * time.Second

// stopGrace is how long a stopped base copy gets to exit after SIGTERM before SIGKILL.
const stopGrace = 3 * time.Second

// awaitGroupExit waits until no process of group pgid is left, sending SIGKILL to what is left after
// stopGrace; it gives up after a second stopGrace (a zombie nobody reaps).
func awaitGroupExit(pgid int) {
	deadline := time.Now().Add(stopGrace)
	killed := false
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			if killed {
				return
			}
			syscall.Kill(-pgid, syscall.SIGKILL)
			killed, deadline = true, time.Now().Add(stopGrace)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childFailed says how the base copy ended, naming the command only: its arguments may be a whole script.
// An exit status is a consequence (the part that failed has said why); a signal is news.
func childFailed(name string, err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			return fmt.Errorf("the base copy (%s) was killed by signal %d (%v)", filepath.Base(name), st.Signal(), st.Signal())
		}
		return cliapp.Consequence(fmt.Errorf("the base copy (%s) exited with status %d", filepath.Base(name), ee.ExitCode()))
	}
	return fmt.Errorf("the base copy (%s) failed: %w", filepath.Base(name), err)
}

// readerGone reports whether f is a pipe whose reader has closed it: poll says POLLERR without any write.
func readerGone(f *os.File) bool {
	if f == nil {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) {
		pfd := struct {
			fd              int32
			events, revents int16
		}{fd: int32(fd)}
		n, _, e := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&pfd)), 1, 0)
		gone = e == 0 && n == 1 && pfd.revents&(pollErr|pollHup) != 0
	})
	return gone
}

// poll(2) events that say the other end of a pipe has closed.
const (
	pollErr = 0x8
	pollHup = 0x10
)

// forward copies the child's records whole into the output. An empty output is allowed (the child may
// write its streams to files, as with xargs).
func (s *session) forward(r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 1<<20)
	if _, err := br.Peek(1); err == io.EOF {
		return nil
	}
	rd := chunkstream.NewReader(br, name)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if _, conn := r.(net.Conn); !conn {
				io.Copy(io.Discard, br) // let the child finish writing; a sink connection is closed instead
			}
			return err
		}
		if rec.Type == chunkstream.TypeBackupStart || rec.Type == chunkstream.TypeBackupEnd {
			return fmt.Errorf("%s holds a backup start or end record", name)
		}
		if err := s.sw.WriteRaw(rec.Raw); err != nil {
			return err
		}
	}
}

func (s *session) waitForStop(stdin io.Reader) error {
	fmt.Fprintf(os.Stderr, "%s=%s\n", EnvBackupID, s.start.BackupID)
	s.o.Log.Info("backup running; write \"stop\" on stdin to finish it, SIGINT or SIGTERM to abandon it")
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	tick := time.NewTicker(s.o.Delay)
	defer tick.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return errors.New("stdin ended without a \"stop\" line: backup abandoned")
			}
			if l == "stop" {
				return nil
			}
		case <-tick.C:
			if err := s.copyCompletedWAL(); err != nil {
				return err
			}
		case <-s.ctx.Done():
			return fmt.Errorf("backup abandoned: %w", s.ctx.Err())
		}
	}
}

// copyCompletedWAL copies every segment the server's WAL position (WALPosition: flush on a primary, replay
// on a standby) has passed, and, once pg_backup_stop returned, the segment holding the stop LSN as soon as
// the position has reached it: a standby's stop segment completes only when the primary writes more, which
// the backup must not wait for. It also checks the slot, and that a standby is still one.
func (s *session) copyCompletedWAL() error {
	pos, rec, err := s.conn.WALPosition(s.ctx)
	if err != nil {
		return fmt.Errorf("backup session: %w", err)
	}
	if s.standby && !rec {
		return cliapp.WithHint(errors.New("the standby was promoted during the backup"), "take the backup again, from the new primary or a standby")
	}
	for s.nextSeg.End() <= pos || (s.stop != 0 && s.nextSeg.Start() < s.stop && s.stop <= pos) {
		if err := s.copySegment(s.nextSeg); err != nil {
			return err
		}
		s.nextSeg.No++
	}
	if s.slot != "" {
		ok, status, err := s.conn.SlotAlive(s.ctx, s.slot)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("replication slot %s is %s: the server removed WAL this backup needs", s.slot, status)
		}
	}
	return s.flush()
}

// copySegment copies one complete segment. Of the segment that holds the backup's stop LSN only the pages
// through it are read; the rest is written as zeros. Recovery and pg_verifybackup read WAL only up to the
// stop LSN, after which pg_backup_stop wrote an XLOG_SWITCH record (xlog.c, do_pg_backup_stop) and the
// server zeros; pg_basebackup -X stream likewise zero-pads the segment it was streaming (walmethods.c). On a
// slow link that saves reading most of a 16 MB segment for a few kilobytes of WAL.
func (s *session) copySegment(seg wal.Segment) error {
	path := "pg_wal/" + seg.Name()
	exp := wal.Expect{Magic: s.magic, SystemID: s.start.SystemID, Segment: seg}
	limit := seg.Size
	if s.stop != 0 && s.stop > seg.Start() && s.stop <= seg.End() {
		limit = (uint64(s.stop-seg.Start()) + wal.PageSize - 1) / wal.PageSize * wal.PageSize
	}
	for off := uint64(0); off < seg.Size; {
		n := min(uint64(chunk), seg.Size-off)
		if off >= limit {
			if err := s.writeZeros(path, off, int(n)); err != nil {
				return err
			}
			off += n
			continue
		}
		n = min(n, limit-off)
		data, missing, err := s.conn.ReadFile(s.ctx, s.buf[:0], path, int64(off), int64(n))
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		s.buf = data
		if missing {
			return cliapp.WithHint(fmt.Errorf("WAL segment %s was removed before it was copied", seg.Name()),
				"give the backup role REPLICATION so pgbb-xlog can pin WAL with a slot, or raise wal_keep_size")
		}
		if uint64(len(data)) != n {
			return fmt.Errorf("WAL segment %s: read %d bytes at offset %d, want %d", seg.Name(), len(data), off, n)
		}
		if err := wal.CheckPages(data, off, exp); err != nil {
			return err
		}
		if err := s.writeChunk(path, off, data); err != nil {
			return err
		}
		off += n
	}
	s.o.Log.Info("copied %s", path)
	return s.sw.WriteOutcome(chunkstream.Outcome{Status: chunkstream.Stored, Length: seg.Size, Final: true, Stored: seg.Size, Path: path})
}

var zeros = make([]byte, chunk)

// zeroChunk is n zero bytes as one zstd frame, and their CRC32C.
type zeroChunk struct {
	frame []byte
	crc   uint32
}

// writeZeros writes n zero bytes of the stop's segment past the stop (copySegment). In a plain backup,
// where the other chunks are stored as they are, they go as one zstd frame of a few bytes each
// (docs/chunk-stream.md, codec): stored, the 16 MB of a segment's tail went through the pipe to pgbb-pack,
// each byte checksummed on both sides, and took 45-80 ms of every run (issue 17's timeline). The frame and
// its CRC are made once per size.
func (s *session) writeZeros(path string, off uint64, n int) error {
	if s.codec != chunkstream.CodecNone {
		return s.writeChunk(path, off, zeros[:n])
	}
	z, ok := s.zeroChunks[n]
	if !ok {
		frame, err := compress.ZstdLevel(nil, zeros[:n], 1)
		if err != nil {
			return err
		}
		z = zeroChunk{frame: frame, crc: crc32c.Checksum(zeros[:n])}
		if s.zeroChunks == nil {
			s.zeroChunks = map[int]zeroChunk{}
		}
		s.zeroChunks[n] = z
	}
	return s.sw.WriteChunk(chunkstream.Chunk{Item: 0, Offset: off, RawLen: uint32(n), RawCRC: z.crc,
		Codec: chunkstream.CodecZstd, Path: path, Data: z.frame})
}

func (s *session) writeChunk(path string, off uint64, data []byte) error {
	c := chunkstream.Chunk{Item: 0, Offset: off, RawLen: uint32(len(data)), RawCRC: crc32c.Checksum(data),
		Codec: s.codec, Path: path, Data: data}
	if s.codec != chunkstream.CodecNone {
		var err error
		if s.zbuf, err = s.comp.Compress(s.zbuf, data); err != nil {
			return err
		}
		c.Data = s.zbuf
	}
	return s.sw.WriteChunk(c)
}

// finish copies pg_control, stops the backup, copies the WAL through the stop LSN and the history files, and
// ends the stream.
func (s *session) finish() error {
	testhook.Pause("stop")
	ctl, _, err := s.readControl()
	if err != nil {
		return err
	}
	if err := s.writeChunk(controlfile.Path, 0, ctl); err != nil {
		return err
	}
	if err := s.sw.WriteOutcome(chunkstream.Outcome{Status: chunkstream.Stored, Length: uint64(len(ctl)), Final: true, Stored: uint64(len(ctl)), Path: controlfile.Path}); err != nil {
		return err
	}
	timeline.Mark("stop backup")
	stop, label, spcmap, err := s.conn.StopBackup(s.ctx)
	timeline.Mark("backup stopped")
	if err != nil {
		return fmt.Errorf("stop backup: %w", err)
	}
	s.stop = stop
	if s.standby {
		s.o.Log.Info("waiting for the standby to replay WAL through %s", stop)
	}
	// the WAL through stop is in segments up to the one holding the byte before it (XLByteToPrevSeg)
	last := wal.SegmentOf(stop-1, s.start.Timeline, uint64(s.start.WALSegmentSize))
	deadline := time.Now().Add(5 * time.Minute)
	for s.nextSeg.No <= last.No {
		if err := s.copyCompletedWAL(); err != nil {
			return err
		}
		if s.nextSeg.No > last.No {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("WAL through %s (segment %s) was not on the server within 5 minutes of pg_backup_stop", stop, s.nextSeg.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	timeline.Mark("WAL through the stop copied")
	if err := s.copyHistoryFiles(); err != nil {
		return err
	}
	if err := s.sw.WriteBackupEnd(chunkstream.BackupEnd{StopLSN: uint64(stop), StopTimeline: s.start.Timeline, BackupLabel: label, TablespaceMap: spcmap}); err != nil {
		return err
	}
	if err := s.sw.Close(); err != nil {
		return err
	}
	s.o.Log.Info("backup %s stopped at %s", s.start.BackupID, stop)
	return s.flush()
}

func (s *session) copyHistoryFiles() error {
	entries, err := s.conn.ListDir(s.ctx, "pg_wal")
	if err != nil {
		return fmt.Errorf("list pg_wal: %w", err)
	}
	for _, e := range entries {
		if !wal.IsHistoryFileName(e.Name) || e.IsDir {
			continue
		}
		// a standby that moved to a later timeline (its upstream promoted) may have stopped on it, where the
		// segment names computed from the start's timeline are not the WAL of the backup
		if tli, _ := strconv.ParseUint(e.Name[:8], 16, 32); s.standby && uint32(tli) > s.start.Timeline {
			return cliapp.WithHint(fmt.Errorf("the standby moved from timeline %d to %d during the backup", s.start.Timeline, tli), "take the backup again")
		}
		path := "pg_wal/" + e.Name
		data, missing, err := s.conn.ReadFile(s.ctx, nil, path, 0, 1<<24)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if missing {
			return fmt.Errorf("history file %s vanished", path)
		}
		if err := s.writeChunk(path, 0, data); err != nil {
			return err
		}
		if err := s.sw.WriteOutcome(chunkstream.Outcome{Status: chunkstream.Stored, Length: uint64(len(data)), Final: true, Stored: uint64(len(data)), Path: path}); err != nil {
			return err
		}
	}
	return nil
}
