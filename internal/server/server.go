// Package server holds every SQL statement pgbb sends and the connection settings it uses. It is the only
// package that imports pgx.
//
// Connection strings follow libpq: key=value conninfo or postgres:// URIs, PG* environment variables,
// ~/.pgpass and sslmode, as pgx's ParseConfig implements them.
package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/wal"
)

// DefaultConnectTimeout applies when neither the DSN nor PGCONNECT_TIMEOUT sets connect_timeout, so that an
// unreachable server fails within seconds instead of hanging.
const DefaultConnectTimeout = 10 * time.Second

// Conn is one server connection. It is not safe for concurrent use.
type Conn struct {
	pg      *pgx.Conn
	Version int    // server_version_num
	User    string // current_user
}

// Password returns the password a DSN carries, so that callers can keep it out of messages. It returns ""
// when the DSN does not parse or holds none.
func Password(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	return cfg.Password
}

// Connect opens a connection. session=true prepares it to hold a backup session: no statement, idle or
// lock timeouts, and TCP keepalives every 10 seconds so a dead peer is noticed.
func Connect(ctx context.Context, dsn, appName string, session bool) (*Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bad connection string: %w", err)
	}
	if cfg.ConnectTimeout == 0 && !strings.Contains(dsn, "connect_timeout") {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok && os.Getenv("PGAPPNAME") == "" {
		cfg.RuntimeParams["application_name"] = appName
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}}
	cfg.DialFunc = d.DialContext
	pg, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c := &Conn{pg: pg}
	var v string
	if err := pg.QueryRow(ctx, "SELECT current_setting('server_version_num')").Scan(&v); err != nil {
		pg.Close(ctx)
		return nil, err
	}
	if c.Version, err = strconv.Atoi(v); err != nil {
		pg.Close(ctx)
		return nil, fmt.Errorf("bad server_version_num %q", v)
	}
	if c.Version < 130000 {
		pg.Close(ctx)
		return nil, fmt.Errorf("server version %d is not supported (pgbb needs PostgreSQL 13 or later)", c.Version)
	}
	if session {
		sets := []string{"SET statement_timeout = 0", "SET lock_timeout = 0", "SET idle_in_transaction_session_timeout = 0"}
		if c.Version >= 140000 {
			sets = append(sets, "SET idle_session_timeout = 0")
		}
		for _, s := range sets {
			if _, err := pg.Exec(ctx, s); err != nil {
				pg.Close(ctx)
				return nil, err
			}
		}
	}
	if err := pg.QueryRow(ctx, "SELECT current_user").Scan(&c.User); err != nil {
		pg.Close(ctx)
		return nil, err
	}
	return c, nil
}

// Close closes the connection; a backup session it held ends with it.
func (c *Conn) Close() { c.pg.Close(context.Background()) }

// BackendPID is the server process serving this connection.
func (c *Conn) BackendPID() uint32 { return c.pg.PgConn().PID() }

// Show returns a setting's value (SHOW name). name must be a plain identifier.
func (c *Conn) Show(ctx context.Context, name string) (string, error) {
	var v string
	err := c.pg.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
	return v, err
}

// InRecovery reports pg_is_in_recovery().
func (c *Conn) InRecovery(ctx context.Context) (bool, error) {
	var b bool
	err := c.pg.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&b)
	return b, err
}

// CanCreateSlot reports whether the current role may create a replication slot (REPLICATION or superuser).
func (c *Conn) CanCreateSlot(ctx context.Context) (bool, error) {
	var b bool
	err := c.pg.QueryRow(ctx, "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&b)
	return b, err
}

// CreateTemporarySlot creates a temporary physical slot that reserves WAL now; it disappears when the session
// ends.
func (c *Conn) CreateTemporarySlot(ctx context.Context, name string) error {
	_, err := c.pg.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", name)
	return err
}

// SlotAlive reports whether the named slot still exists and still reserves WAL (wal_status is not "lost").
func (c *Conn) SlotAlive(ctx context.Context, name string) (bool, string, error) {
	var status *string
	err := c.pg.QueryRow(ctx, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, "missing", nil
	}
	if err != nil {
		return false, "", err
	}
	if status == nil {
		return true, "", nil
	}
	return *status != "lost", *status, nil
}

// Tablespace is one user tablespace and its location on the server.
type Tablespace struct {
	OID      uint32
	Location string
}

// Tablespaces lists the tablespaces other than pg_default and pg_global.
func (c *Conn) Tablespaces(ctx context.Context) ([]Tablespace, error) {
	rows, err := c.pg.Query(ctx, "SELECT oid, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tablespace, error) {
		var t Tablespace
		err := r.Scan(&t.OID, &t.Location)
		return t, err
	})
}

// StartBackup starts a non-exclusive backup on this session and returns its start LSN. PostgreSQL 15
// renamed pg_start_backup(label, fast, exclusive) to pg_backup_start(label, fast).
func (c *Conn) StartBackup(ctx context.Context, label string, fast bool) (wal.LSN, error) {
	q := "SELECT pg_backup_start($1, $2)::text"
	if c.Version < 150000 {
		q = "SELECT pg_start_backup($1, $2, false)::text"
	}
	var s string
	if err := c.pg.QueryRow(ctx, q, label, fast).Scan(&s); err != nil {
		return 0, err
	}
	return wal.ParseLSN(s)
}

// StopBackup ends the backup this session started and returns the stop LSN, backup_label and
// tablespace_map, the two files as the exact bytes the server produced (converted to the server encoding,
// which the server uses for them).
func (c *Conn) StopBackup(ctx context.Context) (wal.LSN, []byte, []byte, error) {
	q := "SELECT lsn::text, convert_to(labelfile, current_setting('server_encoding')), convert_to(coalesce(spcmapfile, ''), current_setting('server_encoding')) FROM pg_backup_stop(false)"
	if c.Version < 150000 {
		q = "SELECT lsn::text, convert_to(labelfile, current_setting('server_encoding')), convert_to(coalesce(spcmapfile, ''), current_setting('server_encoding')) FROM pg_stop_backup(false, false)"
	}
	var s string
	var label, spcmap []byte
	if err := c.pg.QueryRow(ctx, q).Scan(&s, &label, &spcmap); err != nil {
		return 0, nil, nil, err
	}
	lsn, err := wal.ParseLSN(s)
	return lsn, label, spcmap, err
}

// WALFileName returns pg_walfile_name(lsn): the segment name on the server's current timeline.
func (c *Conn) WALFileName(ctx context.Context, lsn wal.LSN) (string, error) {
	var s string
	err := c.pg.QueryRow(ctx, "SELECT pg_walfile_name($1::text::pg_lsn)", lsn.String()).Scan(&s)
	return s, err
}

// FlushLSN returns pg_current_wal_flush_lsn(): WAL before it is on disk in complete pages.
func (c *Conn) FlushLSN(ctx context.Context) (wal.LSN, error) {
	var s string
	if err := c.pg.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&s); err != nil {
		return 0, err
	}
	return wal.ParseLSN(s)
}

// DirEntry is one entry of a server directory.
type DirEntry struct {
	Name  string
	Size  int64
	IsDir bool
	MTime time.Time
}

// ListDir lists a directory relative to the data directory ("" is the data directory itself) with one
// pg_ls_dir and one pg_stat_file per entry in a single query. Entries that vanish while listed are left out;
// a missing directory gives no entries and no error.
func (c *Conn) ListDir(ctx context.Context, dir string) ([]DirEntry, error) {
	rows, err := c.pg.Query(ctx, `SELECT n, s.size, s.isdir, s.modification
FROM pg_ls_dir(CASE WHEN $1 = '' THEN '.' ELSE $1 END, true, false) AS n,
     LATERAL pg_stat_file(CASE WHEN $1 = '' THEN n ELSE $1 || '/' || n END, true) AS s
WHERE s.size IS NOT NULL ORDER BY n`, dir)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DirEntry, error) {
		var e DirEntry
		err := r.Scan(&e.Name, &e.Size, &e.IsDir, &e.MTime)
		return e, err
	})
}

const readFileSQL = "SELECT pg_read_binary_file($1, $2, $3, true)"

// ReadFile reads up to length bytes of a file at offset with pg_read_binary_file(path, offset, length, true),
// asking for the bytea in binary format. It appends to buf. missing is true when the file does not exist;
// a read past the end returns no bytes.
func (c *Conn) ReadFile(ctx context.Context, buf []byte, path string, offset, length int64) (out []byte, missing bool, err error) {
	rr := c.pg.PgConn().ExecParams(ctx, readFileSQL,
		[][]byte{[]byte(path), []byte(strconv.FormatInt(offset, 10)), []byte(strconv.FormatInt(length, 10))},
		[]uint32{25, 20, 20}, []int16{0, 0, 0}, []int16{1})
	out = buf
	rows := 0
	for rr.NextRow() {
		rows++
		v := rr.Values()[0]
		if v == nil {
			missing = true
			continue
		}
		out = append(out, v...)
	}
	if _, err := rr.Close(); err != nil {
		return buf, false, err
	}
	if rows != 1 {
		return buf, false, fmt.Errorf("pg_read_binary_file returned %d rows", rows)
	}
	return out, missing, nil
}

// Range is a piece of a file for ReadRanges.
type Range struct {
	Path           string
	Offset, Length int64
}

// readRangesSQL reads many pieces in one statement. Each row is one call of pg_read_binary_file(text, bigint,
// bigint, boolean), the signature a least-privilege role is granted; the ordinal lets the client check that
// the rows come in the order asked. One statement with many rows costs the server about a third of the CPU
// per byte of one statement per piece (docs/BENCHMARKS.md): the row buffer is reused, the query is
// planned once, and the server streams the next row while the client handles the last one.
const readRangesSQL = "SELECT r.i, pg_read_binary_file(r.p, r.o, r.l, true) FROM unnest($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS r(p, o, l, i)"

// ReadRanges reads every range in one statement and calls fn for each in order with its bytes (valid only
// during the call; nil and missing=true when the file does not exist). A read past the end gives no bytes.
// An error from fn stops the statement.
func (c *Conn) ReadRanges(ctx context.Context, rs []Range, fn func(i int, data []byte, missing bool) error) error {
	paths := make([]string, len(rs))
	offs := make([]int64, len(rs))
	lens := make([]int64, len(rs))
	for i, r := range rs {
		paths[i], offs[i], lens[i] = r.Path, r.Offset, r.Length
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := c.pg.Query(ctx, readRangesSQL, paths, offs, lens)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		v := rows.RawValues()
		if len(v) != 2 || len(v[0]) != 8 || binary.BigEndian.Uint64(v[0]) != uint64(n+1) || n >= len(rs) {
			return fmt.Errorf("pg_read_binary_file: row %d is not the piece asked for", n+1)
		}
		if err := fn(n, v[1], v[1] == nil); err != nil {
			cancel() // stop the server sending the rest
			return err
		}
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if n != len(rs) {
		return fmt.Errorf("pg_read_binary_file: %d rows for %d pieces", n, len(rs))
	}
	return nil
}

// ReadControlFile reads global/pg_control until its CRC is valid: the server may be rewriting it while it
// is read (invariant 5). It returns the bytes and the fields pgbb uses; a server error keeps its SQLSTATE.
func (c *Conn) ReadControlFile(ctx context.Context) ([]byte, controlfile.Info, error) {
	var last error
	for i := 0; i < 50; i++ {
		b, missing, err := c.ReadFile(ctx, nil, controlfile.Path, 0, controlfile.FileSize)
		if err != nil {
			return nil, controlfile.Info{}, fmt.Errorf("read %s: %w", controlfile.Path, err)
		}
		if missing {
			return nil, controlfile.Info{}, fmt.Errorf("%s is missing on the server", controlfile.Path)
		}
		info, err := controlfile.Parse(b)
		if err == nil {
			return b, info, nil
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return nil, controlfile.Info{}, fmt.Errorf("pg_control never read with a valid CRC: %w", last)
}

// ErrorCode returns the SQLSTATE of a server error, or "".
func ErrorCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// WALSegmentSize returns wal_segment_size in bytes.
func (c *Conn) WALSegmentSize(ctx context.Context) (uint64, error) {
	var v int64
	var unit *string
	if err := c.pg.QueryRow(ctx, "SELECT setting::bigint, unit FROM pg_settings WHERE name = 'wal_segment_size'").Scan(&v, &unit); err != nil {
		return 0, err
	}
	if unit == nil || *unit != "B" {
		return 0, fmt.Errorf("wal_segment_size has an unexpected unit")
	}
	return uint64(v), nil
}

// DataDirectoryMode returns data_directory_mode, 0700 or 0750.
func (c *Conn) DataDirectoryMode(ctx context.Context) (uint32, error) {
	s, err := c.Show(ctx, "data_directory_mode")
	if err != nil {
		return 0, err
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("bad data_directory_mode %q", s)
	}
	return uint32(m), nil
}
