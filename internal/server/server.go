// Package server holds every SQL statement pgbb sends and the connection settings it uses. It is the only
// package that imports pgx.
//
// Connection strings follow libpq: key=value conninfo or postgres:// URIs, PG* environment variables,
// ~/.pgpass and sslmode, as pgx's ParseConfig implements them.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/pgversion"
	"github.com/pgbb/pgbb/internal/ratelimit"
	"github.com/pgbb/pgbb/internal/timeline"
	"github.com/pgbb/pgbb/internal/wal"
)

// DefaultConnectTimeout applies when neither the DSN nor PGCONNECT_TIMEOUT sets connect_timeout, so that an
// unreachable server fails within seconds instead of hanging.
const DefaultConnectTimeout = 10 * time.Second

// Conn is one server connection. It is not safe for concurrent use.
type Conn struct {
	pg      *pgx.Conn
	Version int             // server_version_num
	Major   pgversion.Major // the version table's row of the server's major
	User    string          // current_user
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

var limiter struct {
	sync.Once
	l ratelimit.Limiter
}

// SetLimiter has every connection opened from now on pay l for the bytes it reads (docs/toolbox.md,
// section 5). Without it, a process whose environment names a run's shared bucket (PGBB_RATE) pays that.
func SetLimiter(l ratelimit.Limiter) {
	limiter.Do(func() {})
	limiter.l = l
}

func rateLimiter() ratelimit.Limiter {
	limiter.Do(func() { limiter.l = ratelimit.FromEnv() })
	return limiter.l
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
	if cliapp.DebugOn() {
		cfg.Tracer = debugTracer{}
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}}
	cfg.DialFunc = d.DialContext
	if l := rateLimiter(); l != nil {
		cfg.DialFunc = ratelimit.Dial(d, l)
	}
	t0 := time.Now()
	pg, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	timeline.Mark("connected in %.1f ms", time.Since(t0).Seconds()*1000)
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
	if c.Major, err = pgversion.ForServer(c.Version); err != nil {
		pg.Close(ctx)
		return nil, err
	}
	if session {
		sets := []string{"SET statement_timeout = 0", "SET lock_timeout = 0", "SET idle_in_transaction_session_timeout = 0"}
		if c.Major.IdleSessionTimeoutSetting {
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

// ConnectFailed wraps an error of Connect with the hint a user needs: whenFull when the server has no
// connection free for the role (SQLSTATE 53300) and whenFull is not empty, else where to look.
func ConnectFailed(err error, whenFull string) error {
	hint := "check the connection string, PG* variables and that the server is running"
	var host x509.HostnameError
	var ca x509.UnknownAuthorityError
	switch {
	case whenFull != "" && ErrorCode(err) == TooManyConnections:
		hint = whenFull
	case errors.As(err, &host):
		hint = "the server's certificate is not for the host the DSN names: connect by a name the certificate lists (its subject alternative names), or have the certificate reissued"
	case errors.As(err, &ca):
		hint = "the server's certificate is not signed by a CA in sslrootcert: give sslrootcert the CA that signed it"
	}
	return cliapp.WithHint(fmt.Errorf("connect: %w", err), hint)
}

// debugTracer prints every statement and its arguments with --debug (docs/toolbox.md, section 3).
type debugTracer struct{}

func (debugTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	args := make([]string, len(d.Args))
	for i, a := range d.Args {
		args[i] = fmt.Sprintf("$%d=%s", i+1, cliapp.DebugValue(a))
	}
	msg := "SQL: " + strings.Join(strings.Fields(d.SQL), " ")
	if len(args) > 0 {
		msg += " [" + strings.Join(args, ", ") + "]"
	}
	cliapp.Debug("%s", msg)
	return ctx
}

func (debugTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Unverified returns the hosts of dsn (with the PG* variables pgx applies, as libpq does) that a
// connection reaches over the network without verifying the server's certificate and name: every host
// that is not a socket directory, localhost or a loopback address, when any of its connection attempts
// is made below sslmode=verify-full (no TLS, or TLS that skips the name check) (docs/toolbox.md,
// section 6). A backup's bytes and the role's password cross such a link open to whoever sits on it.
func Unverified(dsn string) []string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil
	}
	var hosts []string
	seen := map[string]bool{}
	check := func(host string, tls *tls.Config) {
		if tls != nil && !tls.InsecureSkipVerify || seen[host] || host == "" || strings.HasPrefix(host, "/") || host == "localhost" {
			return
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return
		}
		seen[host] = true
		hosts = append(hosts, host)
	}
	check(cfg.Host, cfg.TLSConfig)
	for _, fb := range cfg.Fallbacks {
		check(fb.Host, fb.TLSConfig)
	}
	return hosts
}

// Resolve returns the host (or socket directory), port and user a connection over dsn reaches, with the
// PG* variables and libpq's defaults applied, as Connect would: without connecting.
func Resolve(dsn string) (host string, port uint16, user string, err error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", 0, "", fmt.Errorf("bad connection string: %w", err)
	}
	return cfg.Host, cfg.Port, cfg.User, nil
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
// renamed pg_start_backup(label, fast, exclusive) to pg_backup_start(label, fast) (pgversion).
func (c *Conn) StartBackup(ctx context.Context, label string, fast bool) (wal.LSN, error) {
	q := "SELECT pg_backup_start($1, $2)::text"
	if c.Major.LegacyBackupAPI {
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
	if c.Major.LegacyBackupAPI {
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

// WALPosition returns how far the WAL in the server's pg_wal is final, and whether the server is (still)
// in recovery: on a primary the flush position (pg_current_wal_flush_lsn(), which fails during recovery);
// on a standby the replay position, pg_last_wal_replay_lsn()
// (the WAL before it was received, flushed and replayed, so a recycled segment under a future name can
// no longer be mistaken for it). One statement, so the two answers agree.
func (c *Conn) WALPosition(ctx context.Context) (wal.LSN, bool, error) {
	var s *string
	var rec bool
	err := c.pg.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END::text,
	pg_is_in_recovery()`).Scan(&s, &rec)
	if err != nil {
		return 0, false, err
	}
	if s == nil {
		return 0, rec, errors.New("the standby has replayed no WAL yet (pg_last_wal_replay_lsn() is null)")
	}
	lsn, err := wal.ParseLSN(*s)
	return lsn, rec, err
}

// File names are bytes, but the server validates every text value a client sends against the database
// encoding (mbutils.c, pg_any_to_server: even when no conversion is needed, and for client_encoding
// SQL_ASCII too), while text it sends out is not validated when the encodings match. A data directory may hold
// names that are not valid in the database encoding (a Latin-1 name in a UTF-8 cluster), and in a database
// whose encoding is not UTF-8 a name travels converted (LATIN1) or is validated on the way out (SQL_ASCII to a
// UTF-8 client). So names come from the server as textsend(name), the raw bytes as bytea, and a path with a
// byte of 0x80 or above is never sent as text: its leading ASCII components are, and every later component
// goes as bytea and is found again by listing its directory and comparing textsend(name) with it
// (resolveSQL). text concatenation and textsend do not validate, so the server rebuilds the exact name.
// ASCII is the same bytes in every server encoding, so ASCII paths keep the direct statements.

// ASCIIPath reports whether p can be sent as text: no byte of 0x80 or above.
func ASCIIPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] >= 0x80 {
			return false
		}
	}
	return true
}

// splitPath cuts a path relative to the data directory into the components before the first one with a
// byte of 0x80 or above (joined; "." when there are none) and the components from there on, raw.
func splitPath(p string) (prefix string, rest [][]byte) {
	comps := strings.Split(p, "/")
	i := 0
	for i < len(comps) && ASCIIPath(comps[i]) {
		i++
	}
	prefix = strings.Join(comps[:i], "/")
	if prefix == "" {
		prefix = "."
	}
	for _, c := range comps[i:] {
		rest = append(rest, []byte(c))
	}
	return prefix, rest
}

// resolveSQL finds a path on the server from splitPath's parts ($1 text, $2 bytea[]): row i of c is the
// prefix followed by the first i components, each the entry of the directory before it whose textsend
// equals the component (names in one directory are unique, so at most one row per level). The last level,
// cardinality($2), is the path; a component that does not exist (the file vanished) leaves it out. The CASE
// keeps pg_ls_dir (strict) from listing the last level, which may be a file.
const resolveSQL = `WITH RECURSIVE c(i, p) AS (
  SELECT 0, $1::text
  UNION ALL
  SELECT c.i + 1, c.p || '/' || n
  FROM c, LATERAL pg_ls_dir(CASE WHEN c.i < cardinality($2::bytea[]) THEN c.p END, true, false) AS n
  WHERE textsend(n) = ($2::bytea[])[c.i + 1]
) `

// resolvedSQL is the path resolveSQL found, as a scalar subquery (NULL when it does not exist).
const resolvedSQL = `(SELECT p FROM c WHERE i = cardinality($2::bytea[]))`

// DirEntry is one entry of a server directory.
type DirEntry struct {
	Name  string // raw bytes, not necessarily valid in any encoding
	Size  int64
	IsDir bool
	MTime time.Time
}

// ListDir lists a directory relative to the data directory ("" is the data directory itself) with one
// pg_ls_dir and one pg_stat_file per entry in a single query, in byte order of the names. Entries that vanish
// while listed are left out; a missing directory gives no entries and no error. Names are the raw bytes
// (textsend), whatever the database encoding; a directory whose path is not ASCII is found by resolveSQL.
func (c *Conn) ListDir(ctx context.Context, dir string) ([]DirEntry, error) {
	var rows pgx.Rows
	var err error
	if ASCIIPath(dir) {
		rows, err = c.pg.Query(ctx, `SELECT textsend(n), s.size, s.isdir, s.modification
FROM pg_ls_dir(CASE WHEN $1 = '' THEN '.' ELSE $1 END, true, false) AS n,
     LATERAL pg_stat_file(CASE WHEN $1 = '' THEN n ELSE $1 || '/' || n END, true) AS s
WHERE s.size IS NOT NULL ORDER BY 1`, dir)
	} else {
		prefix, rest := splitPath(dir)
		rows, err = c.pg.Query(ctx, resolveSQL+`SELECT textsend(n), s.size, s.isdir, s.modification
FROM `+resolvedSQL+` AS d(p), LATERAL pg_ls_dir(d.p, true, false) AS n, LATERAL pg_stat_file(d.p || '/' || n, true) AS s
WHERE s.size IS NOT NULL ORDER BY 1`, prefix, rest)
	}
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DirEntry, error) {
		var e DirEntry
		var name []byte
		err := r.Scan(&name, &e.Size, &e.IsDir, &e.MTime)
		e.Name = string(name)
		return e, err
	})
}

const readFileSQL = "SELECT pg_read_binary_file($1, $2, $3, true)"

// ReadFile reads up to length bytes of a file at offset with pg_read_binary_file(path, offset, length, true),
// asking for the bytea in binary format. It appends to buf. missing is true when the file does not exist;
// a read past the end returns no bytes. A path that is not ASCII is found by resolveSQL.
func (c *Conn) ReadFile(ctx context.Context, buf []byte, path string, offset, length int64) (out []byte, missing bool, err error) {
	if !ASCIIPath(path) {
		prefix, rest := splitPath(path)
		out = buf
		err = c.readPieces(ctx, readMatchedSQL, []any{prefix, rest, []int64{offset}, []int64{length}}, 1, func(_ int, data []byte, m bool) error {
			out, missing = append(out, data...), m
			return nil
		})
		if err != nil {
			return buf, false, err
		}
		return out, missing, nil
	}
	if cliapp.DebugOn() {
		// pgconn's own calls bypass the tracer
		cliapp.Debug("SQL: %s [$1=%s, $2=%d, $3=%d]", readFileSQL, path, offset, length)
	}
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
const readRangesSQL = "SELECT r.i, pg_read_binary_file(r.p, r.o, r.l, true) " + rangesSQL

// rangesSQL is the FROM clause of the statements over many ranges ($1 paths, $2 offsets, $3 lengths): one
// row per range, numbered in the order asked (rangeArgs makes the arrays).
const rangesSQL = "FROM unnest($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS r(p, o, l, i)"

// rangeArgs returns the paths, offsets and lengths of rs as the arrays of rangesSQL.
func rangeArgs(rs []Range) (paths []string, offs, lens []int64) {
	paths, offs, lens = make([]string, len(rs)), make([]int64, len(rs)), make([]int64, len(rs))
	for i, r := range rs {
		paths[i], offs[i], lens[i] = r.Path, r.Offset, r.Length
	}
	return paths, offs, lens
}

// readMatchedSQL reads pieces ($3 offsets, $4 lengths) of one file whose path is not ASCII, found by
// resolveSQL from $1 and $2. The path is an uncorrelated scalar subquery, resolved once; a file that vanished
// gives NULL rows (pg_read_binary_file is strict), as a missing file does with missing_ok.
const readMatchedSQL = resolveSQL + "SELECT r.i, pg_read_binary_file(" + resolvedSQL + ", r.o, r.l, true) FROM unnest($3::bigint[], $4::bigint[]) WITH ORDINALITY AS r(o, l, i)"

// ReadSize is the most one pg_read_binary_file call of ReadRanges asks for. A range longer than that is read
// in calls of ReadSize in the same statement and handed on whole. A row of 1 MiB costs the backend a fresh
// allocation per row (page faults) and a copy of it into the send buffer; rows of 64 KiB halved the
// server's CPU on the capped link (docs/BENCHMARKS.md, issue 17); the stream's chunks stay as large.
const ReadSize = 64 << 10

// ReadRanges reads the ranges and calls fn for each in order with its bytes (valid only during the call; nil
// and missing=true when the file does not exist). A read past the end gives no bytes. An error from fn stops
// the statement. A range longer than ReadSize is read in several calls whose bytes are joined; the first
// call that comes back short or NULL ends the range there (the file shrank or vanished meanwhile: what a
// later call reads would not belong at that place), and it is missing only when its first call is.
func (c *Conn) ReadRanges(ctx context.Context, rs []Range, fn func(i int, data []byte, missing bool) error) error {
	reads, of := splitReads(rs)
	return c.readRanges(ctx, reads, joinReads(reads, of, fn))
}

// joinReads returns the callback of the reads that splitReads made: it joins the bytes of each range's
// reads and calls fn once per range, as ReadRanges says.
func joinReads(reads []Range, of []int, fn func(i int, data []byte, missing bool) error) func(j int, data []byte, gone bool) error {
	var buf []byte
	ended, missing := false, false
	return func(j int, data []byte, gone bool) error {
		i := of[j]
		first, last := j == 0 || of[j-1] != i, j+1 == len(reads) || of[j+1] != i
		if first && last {
			return fn(i, data, gone) // one call: its bytes as they came, not copied
		}
		if first {
			buf, ended, missing = buf[:0], gone, gone
		}
		if !ended {
			buf = append(buf, data...)
			ended = gone || int64(len(data)) < reads[j].Length
		}
		if !last {
			return nil
		}
		if missing {
			return fn(i, nil, true)
		}
		return fn(i, buf, false)
	}
}

// splitReads cuts each range into reads of at most ReadSize; of says which range each read belongs to.
func splitReads(rs []Range) (reads []Range, of []int) {
	for i, r := range rs {
		if r.Length <= ReadSize {
			reads, of = append(reads, r), append(of, i)
			continue
		}
		for o := int64(0); o < r.Length; o += ReadSize {
			reads = append(reads, Range{Path: r.Path, Offset: r.Offset + o, Length: min(ReadSize, r.Length-o)})
			of = append(of, i)
		}
	}
	return reads, of
}

// readRanges reads each range in one pg_read_binary_file call, in order. A run of ranges whose paths are
// ASCII is one statement (readRangesSQL), so a batch without other names is exactly one; each run of ranges
// of one file whose path is not ASCII is one statement of readMatchedSQL.
func (c *Conn) readRanges(ctx context.Context, rs []Range, fn func(i int, data []byte, missing bool) error) error {
	for start := 0; start < len(rs); {
		end := start + 1
		var query string
		var args []any
		if ASCIIPath(rs[start].Path) {
			for end < len(rs) && ASCIIPath(rs[end].Path) {
				end++
			}
			paths, offs, lens := rangeArgs(rs[start:end])
			query, args = readRangesSQL, []any{paths, offs, lens}
		} else {
			for end < len(rs) && rs[end].Path == rs[start].Path {
				end++
			}
			prefix, rest := splitPath(rs[start].Path)
			_, offs, lens := rangeArgs(rs[start:end])
			query, args = readMatchedSQL, []any{prefix, rest, offs, lens}
		}
		base := start
		if err := c.readPieces(ctx, query, args, end-start, func(i int, data []byte, missing bool) error {
			return fn(base+i, data, missing)
		}); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// readPieces runs a statement whose rows are (ordinal, bytea), n of them in ordinal order from 1, and calls
// fn for each.
func (c *Conn) readPieces(ctx context.Context, query string, args []any, n int, fn func(i int, data []byte, missing bool) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := c.pg.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	k := 0
	for rows.Next() {
		v := rows.RawValues()
		if len(v) != 2 || len(v[0]) != 8 || binary.BigEndian.Uint64(v[0]) != uint64(k+1) || k >= n {
			return fmt.Errorf("pg_read_binary_file: row %d is not the piece asked for", k+1)
		}
		if err := fn(k, v[1], v[1] == nil); err != nil {
			cancel() // stop the server sending the rest
			return err
		}
		k++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if k != n {
		return fmt.Errorf("pg_read_binary_file: %d rows for %d pieces", k, n)
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

// NeverOpened reports whether err is a failure to open a connection (the dial, TLS, authentication or the
// server's start-up answer failed: pgx's ConnectError), as opposed to the loss of one that was open.
func NeverOpened(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// Retryable reports whether err means the connection is gone or unusable while the server and the backup
// may well be there (docs/resume.md, "Retry"): end of file or a reset on the socket, a network timeout,
// SQLSTATE class 08, 57P01 (pg_terminate_backend, fast shutdown), 57P02, 57P03, 57P05 (idle session
// timeout), 25P03 (idle in transaction timeout) and 57014 (statement_timeout, pg_cancel_backend). Whoever
// retries must open a new connection. A cancelled context is never retryable.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch code := ErrorCode(err); {
	case strings.HasPrefix(code, "08"):
		return true
	case code == "57P01", code == "57P02", code == "57P03", code == "57P05", code == "25P03", code == "57014":
		return true
	case code == TooManyConnections:
		return true // on a reconnect: the terminated backend may not have released its slot yet
	case code != "":
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ETIMEDOUT) ||
		errors.Is(err, net.ErrClosed) || pgconn.Timeout(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// PageDigest is what the server says of one range for a resume (docs/resume.md): whether the file is
// missing, how many bytes it read, and the SHA-256 of each 8192 bytes of them (or of each unit of
// UnitDigests).
type PageDigest struct {
	Missing bool
	Length  int64
	Digests []byte // 32 bytes per page, the last page possibly shorter than 8192 bytes
}

// unitDigestsSQL reads each range once (a function in FROM runs once per row) and returns its length and
// the concatenated SHA-256 digests of each $4 bytes of it (their first $5 bytes), computed on the server,
// so that only those bytes per unit cross the wire. It calls only pg_read_binary_file(text, bigint, bigint, boolean), the grant a
// least-privilege role has, and sha256(bytea), which every role may call (PostgreSQL 11 and later).
const unitDigestsSQL = "SELECT r.i, length(x.d)::bigint, (SELECT string_agg(substr(sha256(substr(x.d, k * $4::int + 1, $4::int)), 1, $5::int), ''::bytea ORDER BY k) " +
	"FROM generate_series(0, (length(x.d) - 1) / $4::int) AS k) " +
	rangesSQL + " CROSS JOIN LATERAL pg_read_binary_file(r.p, r.o, r.l, true) AS x(d) ORDER BY r.i"

// PageDigests asks the server for the digests of each range's pages, in one statement. Every path must be
// ASCII (a caller fetches the others whole).
func (c *Conn) PageDigests(ctx context.Context, rs []Range) ([]PageDigest, error) {
	return c.UnitDigests(ctx, rs, 8192, 32)
}

// UnitDigests asks the server for the digests of each unit bytes of each range, in one statement: the
// first size bytes (at most 32) of each SHA-256. Every path must be ASCII.
func (c *Conn) UnitDigests(ctx context.Context, rs []Range, unit, size int) ([]PageDigest, error) {
	if size < 16 || size > 32 {
		return nil, fmt.Errorf("digests of %d bytes: want 16 to 32", size)
	}
	for _, r := range rs {
		if !ASCIIPath(r.Path) {
			return nil, fmt.Errorf("page digests of %q: not an ASCII path", r.Path)
		}
	}
	paths, offs, lens := rangeArgs(rs)
	rows, err := c.pg.Query(ctx, unitDigestsSQL, paths, offs, lens, unit, size)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]PageDigest, 0, len(rs))
	for rows.Next() {
		v := rows.RawValues()
		k := len(out)
		if len(v) != 3 || len(v[0]) != 8 || binary.BigEndian.Uint64(v[0]) != uint64(k+1) || k >= len(rs) {
			return nil, fmt.Errorf("page digests: row %d is not the range asked for", k+1)
		}
		if v[1] == nil {
			out = append(out, PageDigest{Missing: true})
			continue
		}
		if len(v[1]) != 8 {
			return nil, fmt.Errorf("page digests: row %d has a bad length", k+1)
		}
		n := int64(binary.BigEndian.Uint64(v[1]))
		if n < 0 || n > rs[k].Length || int64(len(v[2])) != (n+int64(unit)-1)/int64(unit)*int64(size) {
			return nil, fmt.Errorf("page digests: row %d: %d digest bytes for %d bytes of %d asked", k+1, len(v[2]), n, rs[k].Length)
		}
		out = append(out, PageDigest{Length: n, Digests: append([]byte(nil), v[2]...)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) != len(rs) {
		return nil, fmt.Errorf("page digests: %d rows for %d ranges", len(out), len(rs))
	}
	return out, nil
}
