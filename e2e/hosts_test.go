package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// testHost is another host for fetch jobs: a network namespace joined to the root namespace by a veth
// pair (root side Root, its side Addr), with Debian's sshd on Addr (docs/continuous-wal.md, section 2).
type testHost struct {
	NS, Addr, Root string
	sshd           *exec.Cmd
}

// testHosts are the hosts of one test and the ssh command that reaches them with the test's key.
type testHosts struct {
	hosts []*testHost
	ssh   string
}

// newHosts makes n hosts named PREFIX1… on 10.214.(base+i).0/24, each with a default route to the root
// namespace, host keys and a client key made here, and sshd running as root on port 22.
func newHosts(t *testing.T, prefix string, base, n int) *testHosts {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root, to make network namespaces (ip netns add)")
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Fatal("no /usr/sbin/sshd: run scripts/install-deps (Debian's openssh-server)")
	}
	dir := t.TempDir()
	keygen := func(name string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, name)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	keygen("host_key")
	keygen("client_key")
	pub, _ := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	hostPub, _ := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	h := &testHosts{}
	var known strings.Builder
	for i := 1; i <= n; i++ {
		host := &testHost{NS: fmt.Sprintf("%s%d", prefix, i), Addr: fmt.Sprintf("10.214.%d.2", base+i), Root: fmt.Sprintf("10.214.%d.1", base+i)}
		veth := fmt.Sprintf("%sv%d", prefix, i)
		exec.Command("ip", "netns", "del", host.NS).Run() // a crashed run's
		exec.Command("ip", "link", "del", veth).Run()
		for _, args := range [][]string{
			{"netns", "add", host.NS},
			{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.NS},
			{"addr", "add", host.Root + "/24", "dev", veth},
			{"link", "set", veth, "up"},
			{"-n", host.NS, "addr", "add", host.Addr + "/24", "dev", "eth0"},
			{"-n", host.NS, "link", "set", "eth0", "up"},
			{"-n", host.NS, "link", "set", "lo", "up"},
			{"-n", host.NS, "route", "add", "default", "via", host.Root},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
			}
		}
		ns := host.NS
		t.Cleanup(func() { host.kill(); exec.Command("ip", "netns", "del", ns).Run() })
		conf := filepath.Join(dir, ns+".sshd_config")
		os.WriteFile(conf, []byte(fmt.Sprintf(`ListenAddress %s
Port 22
HostKey %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile none
`, host.Addr, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"))), 0o600)
		host.sshd = exec.Command("ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-f", conf, "-E", filepath.Join(dir, ns+".sshd.log"))
		if err := host.sshd.Start(); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&known, "%s %s", host.Addr, hostPub)
		h.hosts = append(h.hosts, host)
	}
	os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(known.String()), 0o600)
	h.ssh = "ssh -i " + filepath.Join(dir, "client_key") + " -o UserKnownHostsFile=" + filepath.Join(dir, "known_hosts") +
		" -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=5 -o ServerAliveInterval=5 -o ServerAliveCountMax=2"
	for _, host := range h.hosts {
		waitFor(t, 10*time.Second, "sshd on "+host.Addr, func() bool {
			c, err := net.DialTimeout("tcp", host.Addr+":22", time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	return h
}

// args are the script's options that run the jobs on every host, -j jobs on each.
func (h *testHosts) args(jobs int) []string {
	a := []string{"-j", strconv.Itoa(jobs), "--ssh", h.ssh, "--remote-fetch", filepath.Join(binDir, "pgbb-fetch")}
	for _, host := range h.hosts {
		a = append(a, "--ssh-host", "root@"+host.Addr)
	}
	return a
}

// dsn serves c to the hosts on the first host's root-side address (every host routes to it) and returns
// the DSN the run and its jobs use.
func (h *testHosts) dsn(t *testing.T, c *pgtest.Cluster) string {
	addr := h.hosts[0].Root
	return fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", addr, forward(t, addr, c), c.User)
}

// pids are the processes in the host's namespace, by pid, with their command names.
func (host *testHost) pids() map[int]string {
	out, _ := exec.Command("ip", "netns", "pids", host.NS).Output()
	m := map[int]string{}
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil {
			m[pid] = strings.TrimSpace(string(comm))
		}
	}
	return m
}

// kill kills every process of the host, sshd and the jobs, with SIGKILL: the host is gone.
func (host *testHost) kill() {
	for i := 0; i < 50; i++ {
		p := host.pids()
		if len(p) == 0 {
			break
		}
		for pid := range p {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if host.sshd != nil {
		host.sshd.Wait()
		host.sshd = nil
	}
}

// bytes returns what the host's link received and sent, from its namespace's counters.
func (host *testHost) bytes(t *testing.T) (rx, tx int64) {
	t.Helper()
	out, err := exec.Command("ip", "-n", host.NS, "-j", "-s", "link", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatalf("ip -n %s -s link: %v", host.NS, err)
	}
	var links []struct {
		Stats64 struct {
			RX, TX struct {
				Bytes int64 `json:"bytes"`
			}
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -n %s -s link: %v %s", host.NS, err, out)
	}
	return links[0].Stats64.RX.Bytes, links[0].Stats64.TX.Bytes
}

// forward serves the test server on addr (an address that is not loopback) and returns the port: the
// harness's servers listen on 127.0.0.1 only.
func forward(t *testing.T, addr string, c *pgtest.Cluster) int {
	t.Helper()
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(in, out)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// Three other hosts run the fetch jobs of a backup taken under write load, two on each, and stream their
// items back over ssh through GNU parallel; this host runs pgbb-xlog and pgbb-pack. The backup passes the
// oracle, and every host fetched its share (its link's counters).
func TestJobsOnOtherHosts(t *testing.T) {
	h := newHosts(t, "pgbbh", 10, 3)
	s := newSource(t, 10)
	c := s.c
	dsn := h.dsn(t, c)
	size, _ := strconv.ParseInt(c.Psql(t, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"), 10, 64)

	var before [][2]int64
	for _, host := range h.hosts {
		rx, tx := host.bytes(t)
		before = append(before, [2]int64{rx, tx})
	}
	stop := s.load(t)
	dest, tsNew := c.TempDir(t), c.TempDir(t)
	r := run(t, 5*time.Minute, env(), script, append(h.args(2), "-v", "-T", s.tsDir+"="+tsNew, dsn, dest)...)
	stop()
	if r.code != 0 {
		t.Fatalf("backup with jobs on 3 hosts: exit %d\n%s", r.code, lastLines(r.stderr, 30))
	}
	var sum int64
	for i, host := range h.hosts {
		rx, tx := host.bytes(t)
		rx, tx = rx-before[i][0], tx-before[i][1]
		t.Logf("host %s: received %d bytes (from the server and ssh), sent %d (its streams)", host.Addr, rx, tx)
		// each host's share: a sixth of the data at least, by the work list's groups of about a ninth
		if tx < size/6 {
			t.Errorf("host %s sent %d bytes of a %d-byte cluster: it did not run its share of the jobs", host.Addr, tx, size)
		}
		sum += tx
	}
	if sum < size*9/10 {
		t.Errorf("the hosts sent %d bytes together, less than the cluster's %d: the jobs ran elsewhere", sum, size)
	}
	for _, host := range h.hosts {
		for pid, comm := range host.pids() {
			if strings.HasPrefix(comm, "pgbb") {
				t.Errorf("host %s: %s (pid %d) still running after the backup", host.Addr, comm, pid)
			}
		}
	}
	s.checkRestore(t, dest, tsNew)
}

// A host that dies mid-run (its sshd and its jobs killed) fails the backup cleanly: non-zero, no
// backup_manifest, nothing of the run left on any host or on this one, no session on the server.
func TestJobsOnOtherHostsHostDies(t *testing.T) {
	h := newHosts(t, "pgbbk", 20, 3)
	s := newSource(t, 20)
	c := s.c
	dsn := h.dsn(t, c)
	stop := s.load(t)
	defer stop()
	dest := filepath.Join(c.TempDir(t), "dest")
	marker := "PGBB_TEST_RUN=" + dest
	victim := h.hosts[1]
	killed := make(chan string, 1)
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			for _, comm := range victim.pids() {
				if comm == "pgbb-fetch" {
					time.Sleep(100 * time.Millisecond) // into its job
					victim.kill()
					killed <- "killed"
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		killed <- "no job seen"
	}()
	tsNew := c.TempDir(t)
	r := run(t, 5*time.Minute, env(marker), script, append(h.args(1), "-T", s.tsDir+"="+tsNew, dsn, dest)...)
	if k := <-killed; k != "killed" {
		t.Fatalf("host %s: %s, exit %d", victim.Addr, k, r.code)
	}
	t.Logf("exit %d, stderr ends:\n%s", r.code, lastLines(r.stderr, 8))
	if r.code != 1 {
		t.Fatalf("a host died mid-run: exit %d, want 1\n%s", r.code, r.stderr)
	}
	summary := ""
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "pgbb-basebackup: error: ") {
			summary = l
		}
	}
	if !strings.Contains(summary, "backup failed; "+dest+" holds no backup_manifest") || !strings.Contains(summary, victim.Addr) {
		t.Errorf("the run's summary %q does not say the backup failed because of host %s:\n%s", summary, victim.Addr, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); !os.IsNotExist(err) {
		t.Errorf("backup_manifest after a failed run: %v", err)
	}
	expectNothingLeft(t, marker)
	deadline := time.Now().Add(leftWithin)
	for _, host := range h.hosts {
		for {
			var left []string
			for pid, comm := range host.pids() {
				if strings.HasPrefix(comm, "pgbb") || comm == "perl" || comm == "bash" {
					left = append(left, fmt.Sprintf("%s (pid %d)", comm, pid))
				}
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("host %s: %v still running after the run failed", host.Addr, left)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stop()
	expectNothingOnServer(t, c)
	// the kept DEST completes on this host, as any kept plain DEST does
	r = run(t, 5*time.Minute, env(), script, "-j", "2", "--resume", "-T", s.tsDir+"="+tsNew, c.DSN(), dest)
	if r.code != 0 {
		t.Fatalf("--resume on this host after the host died: exit %d\n%s", r.code, lastLines(r.stderr, 20))
	}
	s.checkRestore(t, dest, tsNew)
}

// Jobs on other hosts are refused, before anything starts, when the DSN would carry a password to them on
// ssh's command line, when a host cannot be reached, and with the options that need the jobs on this host.
func TestJobsOnOtherHostsRefused(t *testing.T) {
	h := newHosts(t, "pgbbr", 30, 1)
	c := pgtest.New(t, pgtest.Options{})
	dsn := h.dsn(t, c)
	dest := filepath.Join(c.TempDir(t), "dest")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"password in the DSN", nil, append(h.args(1), dsn+" password=secret-pw", dest), 2, "the DSN gives a password"},
		{"PGPASSWORD", []string{"PGPASSWORD=secret-pw"}, append(h.args(1), dsn, dest), 2, "PGPASSWORD gives a password"},
		{"unreachable host", nil, append(h.args(1), "--ssh-host", "root@10.214.39.2", dsn, dest), 1, "host root@10.214.39.2: "},
		{"no pgbb-fetch there", nil, append(h.args(1), "--remote-fetch", "/nonexistent/pgbb-fetch", dsn, dest), 1, "host root@" + h.hosts[0].Addr + ": "},
		{"--resume", nil, append(h.args(1), "--resume", dsn, dest), 2, "--resume with --ssh-host"},
		{"--max-rate", nil, append(h.args(1), "--max-rate", "10M", dsn, dest), 2, "--max-rate with --ssh-host"},
		{"--fanout xargs", nil, append(h.args(1), "--fanout", "xargs", dsn, dest), 2, "--fanout xargs runs the jobs on this host"},
		{"bad host", nil, []string{"--ssh-host", "-oProxyCommand=x", dsn, dest}, 2, "--ssh-host wants [USER@]HOST"},
		{"--ssh without hosts", nil, []string{"--ssh", "ssh", dsn, dest}, 2, "--ssh and --remote-fetch are for jobs on other hosts"},
	} {
		t.Logf("case %s", tc.name)
		r := run(t, time.Minute, env(tc.env...), script, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, want %d and %q:\n%s", tc.name, r.code, tc.code, tc.want, r.stderr)
		}
		if strings.Contains(r.stderr, "secret-pw") {
			t.Errorf("%s: the password is in the messages:\n%s", tc.name, r.stderr)
		}
		if _, err := os.Stat(dest); !os.IsNotExist(err) {
			t.Fatalf("%s: DEST made by a refused run (%v)", tc.name, err)
		}
	}
}
