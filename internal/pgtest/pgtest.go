// Package pgtest starts throwaway real PostgreSQL clusters for Go tests.
//
// It uses only the standard library: clusters are created with initdb and run
// with the postgres server binary found in BinDir. Because PostgreSQL refuses
// to run as root, when the test process runs as root the server binaries
// (initdb, postgres, and anything started via Cluster.ServerCommand) are run
// as the "postgres" operating-system user, and every directory the server
// needs is chowned to that user. Client tools (Cluster.Command, Cluster.Psql)
// always run as the current user.
//
// Every server is started with its own Unix socket directory, listens on
// 127.0.0.1 on a free TCP port, and is stopped (and, for New, deleted) by a
// t.Cleanup registered when it is created, so cleanup also happens when the
// test fails or panics. As a last resort, if the test binary dies without
// running cleanups, the kernel sends the postmaster SIGQUIT (parent-death
// signal), so no server outlives the test process.
package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	defaultBinDir = "/usr/lib/postgresql/15/bin"
	serverOSUser  = "postgres"
	superuser     = "postgres"

	startTimeout     = 60 * time.Second
	fastStopTimeout  = 30 * time.Second
	immediateTimeout = 15 * time.Second
	portRetries      = 3
	logTailLines     = 40
)

// Options controls how New initializes a cluster. The zero value gives a
// cluster without data checksums, mode 0700, and trust authentication.
type Options struct {
	// DataChecksums runs initdb --data-checksums.
	DataChecksums bool
	// GroupReadable runs initdb -g, so the data directory is 0750 and its
	// files 0640.
	GroupReadable bool
	// Conf holds extra "name = value" lines appended to postgresql.conf after
	// the harness defaults (so they override them). Note that port,
	// unix_socket_directories, listen_addresses, logging_collector and
	// lc_messages are passed on the postgres command line and therefore
	// cannot be overridden here.
	Conf []string
	// AuthMethod selects authentication for TCP connections from 127.0.0.1:
	// "" (or "trust") means trust; "scram-sha-256" requires a password
	// (Password must then be non-empty). Connections over the Unix socket
	// (SocketDir) always use trust, so Psql and Command keep working.
	AuthMethod string
	// Password is set for the bootstrap superuser "postgres" (via ALTER ROLE
	// after start) when AuthMethod is "scram-sha-256". When non-empty it is
	// also included in DSN and exported as PGPASSWORD to Command/ServerCommand.
	Password string
	// InitArgs are extra initdb arguments (--wal-segsize=64, ...).
	InitArgs []string
	// BinDir is the directory of the server binaries (initdb, postgres) to use; "" means BinDir(). See
	// MajorBinDir for the other majors.
	BinDir string
}

// Cluster is a running (or stopped) throwaway PostgreSQL server. Fields are
// informational and must not be modified by callers. Methods are safe for
// concurrent use.
type Cluster struct {
	// Dir is the data directory. For clusters from New it lives inside a
	// temporary directory that is removed at cleanup; for Start it is the
	// caller's directory and is never removed.
	Dir string
	// Port is the TCP port on 127.0.0.1 (and the number in the socket name).
	Port int
	// SocketDir is the Unix socket directory (short, under /tmp).
	SocketDir string
	// Host is the TCP listen address, always "127.0.0.1".
	Host string
	// BinDir is the directory the server binaries were taken from.
	BinDir string
	// User is the bootstrap superuser name, always "postgres".
	User string
	// LogFile is the server log (postgres stderr/stdout). It lives outside
	// the data directory, so the data directory contains only what the
	// server itself writes.
	LogFile string

	opt     Options
	baseDir string // scratch dir holding the log (and, for New, the data dir)

	mu            sync.Mutex
	proc          *serverProc
	closed        bool     // cleanup has run
	pendingRemove []string // TempDirs whose removal waits for the server to stop
	tailReported  bool     // a t.Fatal message already contained the log tail
}

type serverProc struct {
	proc *os.Process
	done chan struct{} // closed when the postmaster has exited and been reaped
	err  error         // wait error; valid after done is closed
}

// BinDir returns the directory holding the PostgreSQL server binaries: the
// value of the environment variable PGBB_PGBIN if set, otherwise
// /usr/lib/postgresql/15/bin.
func BinDir() string {
	if d := os.Getenv("PGBB_PGBIN"); d != "" {
		return d
	}
	return defaultBinDir
}

// MajorBinDir returns the directory of the server binaries of a PostgreSQL major: the environment
// variable PGBB_PGBIN_<major> when set (the e2e tests set it from scripts/install-pg-majors), else BinDir()
// when its postgres is that major.
func MajorBinDir(major int) (string, error) {
	if d := os.Getenv(fmt.Sprintf("PGBB_PGBIN_%d", major)); d != "" {
		return d, nil
	}
	out, err := exec.Command(filepath.Join(BinDir(), "postgres"), "--version").Output()
	if err == nil {
		// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
		f := strings.Fields(string(out))
		if len(f) > 2 {
			if m, _ := strconv.Atoi(strings.SplitN(f[2], ".", 2)[0]); m == major {
				return BinDir(), nil
			}
		}
	}
	return "", fmt.Errorf("pgtest: no PostgreSQL %d server binaries: run scripts/install-pg-majors %d and set PGBB_PGBIN_%d to the directory it prints", major, major, major)
}

// Available reports whether clusters can be created: it returns nil if initdb
// and postgres exist (as executable files) in BinDir and, when running as
// root, the "postgres" OS user exists. Otherwise the error describes what is
// missing. Tests that want to skip instead of fail should check it before
// calling New.
func Available() error { return availableIn(BinDir()) }

func availableIn(dir string) error {
	var missing []string
	for _, name := range []string{"initdb", "postgres"} {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		switch {
		case err != nil:
			missing = append(missing, fmt.Sprintf("%s (%v)", name, err))
		case st.IsDir() || st.Mode().Perm()&0o111 == 0:
			missing = append(missing, fmt.Sprintf("%s (%s is not an executable file)", name, p))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("pgtest: PostgreSQL server binaries missing in %s (set PGBB_PGBIN to override): %s",
			dir, strings.Join(missing, "; "))
	}
	if os.Geteuid() == 0 {
		if _, err := lookupServerUser(); err != nil {
			return err
		}
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago (it
// listens on port 0 and closes the listener). Another process may grab it
// before it is used; New and Start retry with a different port when that
// happens.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ---------------------------------------------------------------------------
// server OS user

type osUser struct {
	name string
	uid  int
	gid  int
	cred *syscall.Credential
}

var (
	serverUserOnce sync.Once
	serverUserVal  *osUser
	serverUserErr  error
)

func lookupServerUser() (*osUser, error) {
	serverUserOnce.Do(func() {
		u, err := user.Lookup(serverOSUser)
		if err != nil {
			serverUserErr = fmt.Errorf("pgtest: running as root but cannot look up OS user %q to run the server as: %w", serverOSUser, err)
			return
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 != nil || err2 != nil {
			serverUserErr = fmt.Errorf("pgtest: OS user %q has non-numeric uid/gid %q/%q", serverOSUser, u.Uid, u.Gid)
			return
		}
		groups := []uint32{uint32(gid)}
		if ids, err := u.GroupIds(); err == nil {
			for _, s := range ids {
				if g, err := strconv.Atoi(s); err == nil && g != gid {
					groups = append(groups, uint32(g))
				}
			}
		}
		serverUserVal = &osUser{
			name: serverOSUser,
			uid:  uid,
			gid:  gid,
			cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups},
		}
	})
	return serverUserVal, serverUserErr
}

// serverUser returns the user to run server processes as, or nil when not
// running as root (run as the current user).
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	return lookupServerUser()
}

// ChownToServerUser recursively changes the owner of path (and its group to
// the server user's primary group) to the "postgres" OS user when running as
// root; it is a no-op otherwise. Symbolic links are not followed (Lchown
// semantics), except that for a symlink directly inside a pg_tblspc
// directory the link itself is chowned and the tablespace directory it points
// to is chowned recursively too, so a restored data directory with
// tablespaces becomes usable by the server. Call it on a restored backup
// before passing it to Start. On a running cluster's directory, an entry
// the server removes during the walk (a recycled WAL segment, a temporary
// file) is skipped: it no longer needs an owner.
func ChownToServerUser(path string) error {
	su, err := serverUser()
	if err != nil || su == nil {
		return err
	}
	return chownTree(path, su.uid, su.gid, map[string]bool{})
}

func chownTree(root string, uid, gid int, visited map[string]bool) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p != root {
			return nil
		}
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != root {
				return nil
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 && filepath.Base(filepath.Dir(p)) == "pg_tblspc" {
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return fmt.Errorf("pgtest: resolving tablespace link %s: %w", p, err)
			}
			if visited[target] {
				return nil
			}
			visited[target] = true
			return chownTree(target, uid, gid, visited)
		}
		return nil
	})
}

// chownServer chowns a single path to the server user when running as root.
func chownServer(path string) error {
	su, err := serverUser()
	if err != nil || su == nil {
		return err
	}
	return os.Lchown(path, su.uid, su.gid)
}

// checkServerCanTraverse verifies (when running as root) that the server user
// can search every ancestor directory of path, giving a clear error instead of
// a confusing "permission denied" from the server.
func checkServerCanTraverse(path string) error {
	su, err := serverUser()
	if err != nil || su == nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	groups := map[uint32]bool{}
	for _, g := range su.cred.Groups {
		groups[g] = true
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if ok {
			perm := st.Mode().Perm()
			var okx bool
			switch {
			case int(sys.Uid) == su.uid:
				okx = perm&0o100 != 0
			case groups[sys.Gid]:
				okx = perm&0o010 != 0
			default:
				okx = perm&0o001 != 0
			}
			if !okx {
				return fmt.Errorf("pgtest: OS user %q cannot traverse %s (mode %v, owner %d:%d), needed to reach %s; "+
					"use Cluster.TempDir for directories the server must use", su.name, d, perm, sys.Uid, sys.Gid, abs)
			}
		}
		if d == "/" || d == filepath.Dir(d) {
			return nil
		}
	}
}

// ---------------------------------------------------------------------------
// directories

// mkServerDir creates a fresh directory under parent with the given mode,
// owned by the server user.
func mkServerDir(parent, pattern string, mode os.FileMode) (string, error) {
	d, err := os.MkdirTemp(parent, pattern)
	if err != nil {
		return "", fmt.Errorf("pgtest: creating temp dir: %w", err)
	}
	if err := os.Chmod(d, mode); err != nil {
		os.RemoveAll(d)
		return "", fmt.Errorf("pgtest: chmod %s: %w", d, err)
	}
	if err := chownServer(d); err != nil {
		os.RemoveAll(d)
		return "", fmt.Errorf("pgtest: chown %s: %w", d, err)
	}
	return d, nil
}

func binDirOf(opt Options) string {
	if opt.BinDir != "" {
		return opt.BinDir
	}
	return BinDir()
}

func newClusterShell(opt Options) (*Cluster, error) {
	if err := checkServerCanTraverse(filepath.Join(os.TempDir(), "x")); err != nil {
		return nil, err
	}
	base, err := mkServerDir(os.TempDir(), "pgbb-", 0o755)
	if err != nil {
		return nil, err
	}
	// Unix socket paths are limited to ~107 bytes, so always use /tmp.
	sock, err := mkServerDir("/tmp", "pgbbsock-", 0o755)
	if err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	return &Cluster{
		Host:      "127.0.0.1",
		BinDir:    binDirOf(opt),
		User:      superuser,
		SocketDir: sock,
		LogFile:   filepath.Join(base, "server.log"),
		opt:       opt,
		baseDir:   base,
	}, nil
}

// ---------------------------------------------------------------------------
// New / Start

// New initializes a new cluster with initdb in a fresh temporary directory,
// configures it (see below), starts it on a free port and waits until it
// accepts connections. On any failure it calls t.Fatal with the server log
// tail. It registers a t.Cleanup that stops the server (fast shutdown, then
// immediate if it has not stopped within 30 s) and removes the data
// directory, log and socket directory.
//
// The cluster is created with superuser "postgres", encoding UTF8, locale C
// and initdb --no-sync. postgresql.conf gets max_wal_senders = 10,
// wal_level = replica, max_connections = 60, shared_buffers = 32MB and
// unix_socket_permissions = 0777 (fsync stays on), then opt.Conf. pg_hba.conf
// allows trust over the Unix socket and opt.AuthMethod from 127.0.0.1, for
// normal and replication connections.
func New(t testing.TB, opt Options) *Cluster {
	t.Helper()
	if err := availableIn(binDirOf(opt)); err != nil {
		t.Fatal(err)
	}
	method := opt.AuthMethod
	switch method {
	case "", "trust":
		method = "trust"
	case "scram-sha-256":
		if opt.Password == "" {
			t.Fatal("pgtest: Options.AuthMethod scram-sha-256 requires Options.Password")
		}
	default:
		t.Fatalf("pgtest: unsupported Options.AuthMethod %q (want \"\", \"trust\" or \"scram-sha-256\")", opt.AuthMethod)
	}

	c, err := newClusterShell(opt)
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = filepath.Join(c.baseDir, "data")
	t.Cleanup(func() { c.cleanup(t) })

	args := []string{"-D", c.Dir, "-U", superuser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"}
	if opt.DataChecksums {
		args = append(args, "--data-checksums")
	}
	if opt.GroupReadable {
		args = append(args, "-g")
	}
	args = append(args, opt.InitArgs...)
	initdb := c.serverCmd(filepath.Join(c.BinDir, "initdb"), args...)
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb failed: %v\n%s", err, out)
	}

	conf := []string{
		"",
		"# added by pgtest",
		"max_wal_senders = 10",
		"wal_level = replica",
		"max_connections = 60",
		"shared_buffers = 32MB",
		"unix_socket_permissions = 0777",
	}
	if len(opt.Conf) > 0 {
		conf = append(conf, "# Options.Conf")
		conf = append(conf, opt.Conf...)
	}
	if err := appendFile(filepath.Join(c.Dir, "postgresql.conf"), strings.Join(conf, "\n")+"\n"); err != nil {
		t.Fatalf("pgtest: writing postgresql.conf: %v", err)
	}
	hba := fmt.Sprintf(`# written by pgtest
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  %[1]s
host    replication  all   127.0.0.1/32  %[1]s
`, method)
	// WriteFile truncates the existing file, keeping its owner and mode.
	if err := os.WriteFile(filepath.Join(c.Dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatalf("pgtest: writing pg_hba.conf: %v", err)
	}

	if err := c.startWithRetry(); err != nil {
		c.fatalWithLog(t, fmt.Sprintf("pgtest: starting cluster in %s: %v", c.Dir, err))
	}
	if method == "scram-sha-256" {
		c.Psql(t, "postgres", "SET password_encryption = 'scram-sha-256';\nALTER ROLE postgres PASSWORD "+quoteLiteral(opt.Password)+";")
	}
	return c
}

// Start starts an existing data directory (for example a restored backup) on
// a new free port with its own socket directory and log file, and waits until
// it accepts connections (or, during archive recovery without hot standby,
// until recovery has started), like pg_ctl start -w. The directory must
// already be owned by the server user (call ChownToServerUser first when
// running as root) and have mode 0700 or 0750, and its parents must be
// traversable by that user (Cluster.TempDir directories are). The data
// directory's own pg_hba.conf and postgresql.conf are used unchanged; the
// superuser is assumed to be "postgres". On failure t.Fatal is called with
// the log tail. A t.Cleanup stops the server; dir itself is NOT removed (the
// caller owns it), only the harness's log and socket directories are.
func Start(t testing.TB, dir string) *Cluster {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	version, err := os.ReadFile(filepath.Join(abs, "PG_VERSION"))
	if err != nil {
		t.Fatalf("pgtest: %s does not look like a data directory: %v", abs, err)
	}
	// the server binaries of the directory's major
	major, _ := strconv.Atoi(strings.TrimSpace(string(version)))
	bin, err := MajorBinDir(major)
	if err != nil {
		t.Fatal(err)
	}
	if su, err := serverUser(); err != nil {
		t.Fatal(err)
	} else if su != nil {
		st, err := os.Stat(abs)
		if err != nil {
			t.Fatal(err)
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != su.uid {
			t.Fatalf("pgtest: data directory %s is owned by uid %d, not by server user %q (uid %d); call ChownToServerUser first",
				abs, sys.Uid, su.name, su.uid)
		}
		if err := checkServerCanTraverse(abs); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newClusterShell(Options{BinDir: bin})
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = abs
	t.Cleanup(func() { c.cleanup(t) })
	if err := c.startWithRetry(); err != nil {
		c.fatalWithLog(t, fmt.Sprintf("pgtest: starting cluster in %s: %v", c.Dir, err))
	}
	return c
}

// fatalWithLog fails t with msg followed by the server log tail.
func (c *Cluster) fatalWithLog(t testing.TB, msg string) {
	t.Helper()
	c.mu.Lock()
	c.tailReported = true
	c.mu.Unlock()
	t.Fatalf("%s\n--- last %d lines of %s ---\n%s", msg, logTailLines, c.LogFile, c.logTail())
}

func (c *Cluster) cleanup(t testing.TB) {
	c.mu.Lock()
	reported := c.tailReported
	c.mu.Unlock()
	if t.Failed() && !reported {
		if tail := c.logTail(); tail != "" {
			t.Logf("pgtest: test failed; last %d lines of server log %s:\n%s", logTailLines, c.LogFile, tail)
		}
	}
	if err := c.stop(); err != nil {
		t.Errorf("pgtest: stopping cluster %s: %v", c.Dir, err)
	}
	c.mu.Lock()
	c.closed = true
	pending := c.pendingRemove
	c.pendingRemove = nil
	c.mu.Unlock()
	for _, d := range pending {
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	}
	if err := os.RemoveAll(c.SocketDir); err != nil {
		t.Errorf("pgtest: %v", err)
	}
	// baseDir holds the log and, for New (but never for Start), the data
	// directory.
	if err := os.RemoveAll(c.baseDir); err != nil {
		t.Errorf("pgtest: %v", err)
	}
}

// TempDir returns a new empty directory (mode 0700) owned by the server user,
// for tablespaces, backup targets and restored data directories that the
// server must own. It is removed at cleanup of t, but never while this
// cluster is still running: if the cluster is running then, removal is
// deferred until the cluster's own cleanup has stopped it.
func (c *Cluster) TempDir(t testing.TB) string {
	t.Helper()
	d, err := mkServerDir(os.TempDir(), "pgbbdir-", 0o700)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		if !c.closed && c.proc != nil {
			c.pendingRemove = append(c.pendingRemove, d)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return d
}

// ---------------------------------------------------------------------------
// connection helpers

// DSN returns a libpq keyword/value connection string for TCP:
// "host=127.0.0.1 port=N user=postgres dbname=postgres sslmode=disable",
// plus password=... when Options.Password was set.
func (c *Cluster) DSN() string {
	s := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", c.Host, c.Port, c.User)
	if c.opt.Password != "" {
		s += " password=" + quoteConnValue(c.opt.Password)
	}
	return s
}

func quoteConnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\f\v'\\") {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func (c *Cluster) clientEnv() []string {
	env := append(os.Environ(),
		"PGHOST="+c.SocketDir,
		"PGPORT="+strconv.Itoa(c.Port),
		"PGUSER="+c.User,
		"PGDATABASE=postgres",
	)
	if c.opt.Password != "" {
		env = append(env, "PGPASSWORD="+c.opt.Password)
	}
	return env
}

// toolPath resolves a client/server tool name: a name containing a slash is
// used as is; otherwise the cluster's BinDir/name if it exists, else the default BinDir()/name (the
// server binaries of other majors come without client tools), else /usr/bin/name, else a
// $PATH lookup, else BinDir/name (so the error mentions that path).
func (c *Cluster) toolPath(name string) string {
	if strings.ContainsRune(name, '/') {
		return name
	}
	for _, p := range []string{filepath.Join(c.BinDir, name), filepath.Join(BinDir(), name), filepath.Join("/usr/bin", name)} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return filepath.Join(c.BinDir, name)
}

// Command returns an exec.Cmd for a client tool (pgbench, pg_amcheck,
// pg_verifybackup, psql, ...) taken from BinDir (falling back to /usr/bin
// and $PATH; a name containing "/" is used as is). Its Env is os.Environ()
// plus PGHOST=SocketDir, PGPORT, PGUSER=postgres, PGDATABASE=postgres (and
// PGPASSWORD when Options.Password is set), so it connects over the Unix
// socket by default. It runs as the current user (clients may run as root).
// Stdin/Stdout/Stderr are unset (i.e. /dev/null) unless the caller sets them.
func (c *Cluster) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(c.toolPath(name), args...)
	cmd.Env = c.clientEnv()
	return cmd
}

// ServerCommand is like Command but the process runs as the server user
// (for pg_ctl, pg_checksums, pg_resetwal, ... which must run as the data
// directory owner). When running as root, cmd.Dir is set to a directory that
// user can access, so pass absolute paths. If you start a server with
// pg_ctl, pass -l c.LogFile; otherwise the postmaster keeps the command's
// stdout open and Output/CombinedOutput never return.
func (c *Cluster) ServerCommand(name string, args ...string) *exec.Cmd {
	return c.serverCmdEnv(c.toolPath(name), c.clientEnv(), args...)
}

func (c *Cluster) serverCmd(path string, args ...string) *exec.Cmd {
	return c.serverCmdEnv(path, os.Environ(), args...)
}

func (c *Cluster) serverCmdEnv(path string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	if su, _ := serverUser(); su != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: su.cred}
		// The test's working directory may not be accessible to the server
		// user, and some tools insist on being able to resolve it.
		cmd.Dir = c.baseDir
	}
	return cmd
}

// Psql runs psql (BinDir/psql, falling back to /usr/bin/psql) with
// -X -A -t -q -v ON_ERROR_STOP=1 against database db ("" means postgres) over
// the Unix socket as user postgres, feeding sql on standard input (so several
// ;-separated statements run one after another, each in its own transaction
// unless you write BEGIN/COMMIT, and commands like CREATE DATABASE work). It
// returns stdout with surrounding whitespace trimmed: unaligned, tuples only,
// fields separated by "|", rows by newlines, no command tags. On failure it
// calls t.Fatal with psql's stderr. db may also be a connection string.
func (c *Cluster) Psql(t testing.TB, db, sql string) string {
	t.Helper()
	if db == "" {
		db = "postgres"
	}
	cmd := c.Command("psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", "-")
	cmd.Stdin = strings.NewReader(sql)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pgtest: psql (db %s, port %d) failed: %v\nstderr:\n%s\nsql:\n%s", db, c.Port, err, stderr.String(), sql)
	}
	return strings.TrimSpace(stdout.String())
}

// ---------------------------------------------------------------------------
// start / stop

// Stop shuts the server down with a fast shutdown and waits for it to exit
// (escalating to immediate shutdown after 30 s). It also stops a postmaster
// that the test itself started in Dir (e.g. with pg_ctl via ServerCommand).
// Stopping an already stopped cluster is a no-op. Calls t.Fatal on failure.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		c.fatalWithLog(t, fmt.Sprintf("pgtest: stopping cluster %s: %v", c.Dir, err))
	}
}

// Restart stops the server (fast shutdown, like pg_ctl restart -m fast) and
// starts it again on the same port and socket directory, waiting until it is
// ready. It also works on a stopped cluster. Calls t.Fatal (with the log
// tail) on failure.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		c.fatalWithLog(t, fmt.Sprintf("pgtest: stopping cluster %s for restart: %v", c.Dir, err))
	}
	if _, err := c.start(c.Port); err != nil {
		c.fatalWithLog(t, fmt.Sprintf("pgtest: restarting cluster %s: %v", c.Dir, err))
	}
}

func (c *Cluster) startWithRetry() error {
	var lastErr error
	for attempt := 0; attempt <= portRetries; attempt++ {
		port, err := FreePort()
		if err != nil {
			return err
		}
		inUse, err := c.start(port)
		if err == nil {
			return nil
		}
		lastErr = err
		if !inUse {
			return err
		}
	}
	return fmt.Errorf("port in use on every attempt: %w", lastErr)
}

// start launches the postmaster on port and waits until it is ready. inUse
// reports whether a failure was caused by the port being taken.
func (c *Cluster) start(port int) (inUse bool, err error) {
	c.mu.Lock()
	if c.proc != nil {
		select {
		case <-c.proc.done:
		default:
			c.mu.Unlock()
			return false, errors.New("server is already running")
		}
	}
	if c.closed {
		c.mu.Unlock()
		return false, errors.New("cluster has been cleaned up")
	}
	c.Port = port
	c.mu.Unlock()

	logf, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return false, err
	}
	defer logf.Close()
	if err := chownServer(c.LogFile); err != nil {
		return false, err
	}
	logStart, _ := logf.Seek(0, io.SeekEnd)

	cmd := exec.Command(filepath.Join(c.BinDir, "postgres"),
		"-D", c.Dir,
		"-p", strconv.Itoa(port),
		"-k", c.SocketDir,
		"-c", "listen_addresses="+c.Host,
		"-c", "logging_collector=off",
		"-c", "lc_messages=C",
	)
	cmd.Env = os.Environ()
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = c.baseDir
	attr := &syscall.SysProcAttr{
		// Own process group: terminal signals aimed at the test do not hit
		// the server directly.
		Setpgid: true,
		// If the test binary dies without running cleanups, the postmaster
		// gets SIGQUIT (immediate shutdown). The signal fires when the
		// *thread* that forked exits, so fork from a goroutine locked to its
		// thread which lives until the postmaster exits.
		Pdeathsig: syscall.SIGQUIT,
	}
	if su, err := serverUser(); err != nil {
		return false, err
	} else if su != nil {
		attr.Credential = su.cred
	}
	cmd.SysProcAttr = attr

	sp := &serverProc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread is discarded when this goroutine exits,
		// which only happens after the postmaster is gone.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		sp.proc = cmd.Process
		started <- nil
		sp.err = cmd.Wait()
		close(sp.done)
	}()
	if err := <-started; err != nil {
		return false, fmt.Errorf("starting postgres: %w", err)
	}
	c.mu.Lock()
	c.proc = sp
	c.mu.Unlock()

	if err := c.waitReady(sp, startTimeout); err != nil {
		// Make sure nothing is left behind.
		killProc(sp)
		c.mu.Lock()
		if c.proc == sp {
			c.proc = nil
		}
		c.mu.Unlock()
		return c.logSinceMentionsPortInUse(logStart), err
	}
	return false, nil
}

func (c *Cluster) waitReady(sp *serverProc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pid := sp.proc.Pid
	for {
		select {
		case <-sp.done:
			return fmt.Errorf("postgres exited during startup: %v", sp.err)
		default:
		}
		if p, status, err := readPidFile(c.Dir); err == nil && p == pid && (status == "ready" || status == "standby") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not become ready within %v", timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// readPidFile parses postmaster.pid: line 1 is the PID, line 8 the status
// ("starting", "ready", "stopping", "standby").
func readPidFile(dir string) (pid int, status string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0, "", err
	}
	lines := strings.Split(string(b), "\n")
	pid, err = strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil {
		return 0, "", err
	}
	if len(lines) >= 8 {
		status = strings.TrimSpace(lines[7])
	}
	return pid, status, nil
}

func (c *Cluster) logSinceMentionsPortInUse(offset int64) bool {
	f, err := os.Open(c.LogFile)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return false
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	s := string(b)
	return strings.Contains(s, "Address already in use") || strings.Contains(s, "could not bind IPv4 address")
}

func waitDone(sp *serverProc, d time.Duration) bool {
	select {
	case <-sp.done:
		return true
	case <-time.After(d):
		return false
	}
}

func killProc(sp *serverProc) {
	_ = sp.proc.Signal(syscall.SIGQUIT)
	if !waitDone(sp, immediateTimeout) {
		_ = sp.proc.Kill()
		<-sp.done
	}
}

// stop stops our own postmaster (SIGINT = fast, then SIGQUIT = immediate,
// then SIGKILL) and then any other live postmaster recorded in
// Dir/postmaster.pid (e.g. one the test restarted with pg_ctl).
func (c *Cluster) stop() error {
	c.mu.Lock()
	sp := c.proc
	c.proc = nil
	c.mu.Unlock()

	var errs []error
	ownPid := 0
	if sp != nil {
		ownPid = sp.proc.Pid
		select {
		case <-sp.done:
		default:
			_ = sp.proc.Signal(syscall.SIGINT)
			if !waitDone(sp, fastStopTimeout) {
				errs = append(errs, fmt.Errorf("fast shutdown did not finish within %v; used immediate shutdown", fastStopTimeout))
				killProc(sp)
			}
		}
	}
	if pid, _, err := readPidFile(c.Dir); err == nil && pid != ownPid && postmasterAlive(pid) {
		if err := stopForeign(c.Dir, pid); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// postmasterAlive reports whether pid is a live (non-zombie) postgres process.
func postmasterAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	comm := s[strings.IndexByte(s, '(')+1 : i]
	state := s[i+2]
	return state != 'Z' && state != 'X' && (strings.Contains(comm, "postgres") || strings.Contains(comm, "postmaster"))
}

func stopForeign(dir string, pid int) error {
	gone := func() bool {
		if p, _, err := readPidFile(dir); err != nil || p != pid {
			return true
		}
		return !postmasterAlive(pid)
	}
	wait := func(d time.Duration) bool {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			if gone() {
				return true
			}
			time.Sleep(25 * time.Millisecond)
		}
		return gone()
	}
	_ = syscall.Kill(pid, syscall.SIGINT)
	if wait(fastStopTimeout) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	if wait(immediateTimeout) {
		return fmt.Errorf("postmaster %d (not started by pgtest) needed immediate shutdown", pid)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("postmaster %d (not started by pgtest) had to be killed", pid)
}

// ---------------------------------------------------------------------------
// misc

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// logTail returns the last logTailLines lines of the server log.
func (c *Cluster) logTail() string {
	f, err := os.Open(c.LogFile)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	const maxRead = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		_, _ = f.Seek(st.Size()-maxRead, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}
