package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// makeCA writes into a new directory the server user can read a test CA (ca.crt) and a server
// certificate and key signed by it for "localhost" only (server.crt, server.key, the key 0600 and owned
// by the server user, as PostgreSQL requires).
func makeCA(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgbb-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, srvKey := key(), key()
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgbb test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srv := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", "CERTIFICATE", caDER, 0o644)
	write("server.crt", "CERTIFICATE", srvDER, 0o644)
	write("server.key", "EC PRIVATE KEY", keyDER, 0o600)
	if err := pgtest.ChownToServerUser(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Issue 15, TLS (docs/toolbox.md, section 6): a server with ssl = on and a certificate from a CA the test
// made. sslmode=verify-full by the certificate's name backs up and restores; by another name (the
// address) it is refused with the reason and a hint, before anything starts; a connection that is not
// verified to a host that is not loopback gets a warning (TestUnverifiedTLSWarning, and server.Unverified's
// unit test for which hosts).
func TestTLSVerifyFull(t *testing.T) {
	if ips, _ := net.LookupIP("localhost"); len(ips) == 0 {
		t.Fatal("localhost does not resolve")
	}
	dir := makeCA(t)
	s := newSourceOf(t, 15, 1, pgtest.Options{DataChecksums: true, Conf: []string{"ssl = on",
		"ssl_cert_file = '" + filepath.Join(dir, "server.crt") + "'", "ssl_key_file = '" + filepath.Join(dir, "server.key") + "'"}})
	c := s.c
	base := func(host string) string {
		return "host=" + host + " port=" + strconv.Itoa(c.Port) + " user=" + c.User + " dbname=postgres sslmode=verify-full sslrootcert=" + filepath.Join(dir, "ca.crt")
	}
	dest, tsNew := c.TempDir(t), c.TempDir(t)
	stop := s.load(t)
	r := run(t, 5*time.Minute, env(), script, "-j", "2", "-T", s.tsDir+"="+tsNew, base("localhost"), dest)
	stop()
	if r.code != 0 {
		t.Fatalf("verify-full by the certificate's name: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "not verified") {
		t.Errorf("a verified connection got the warning:\n%s", r.stderr)
	}
	s.checkRestore(t, dest, tsNew)

	d := filepath.Join(c.TempDir(t), "new")
	r = run(t, 2*time.Minute, env(), script, "-j", "2", base("127.0.0.1"), d)
	if r.code == 0 || !strings.Contains(r.stderr, "certificate") || !strings.Contains(lastLines(r.stderr, 1), "hint: the server's certificate is not for the host") {
		t.Fatalf("verify-full by another name: exit %d, want a refusal naming the certificate, with a hint:\n%s", r.code, r.stderr)
	}
	t.Logf("refused: %s", lastLines(r.stderr, 2))
	if _, err := os.Stat(d); err == nil {
		t.Errorf("the refused run left %s", d)
	}
	expectNothingOnServer(t, c)
}

// Issue 15, TLS: the warning for a connection that is not verified, to an address that is not loopback.
// The test gives lo a second address, 10.213.7.1 (not loopback to Go's net.IP nor to pgbb), and forwards
// it to the test server, which listens on 127.0.0.1 only. A run by that address with sslmode=disable warns
// once, naming the host, and still backs up; the same run by 127.0.0.1 does not warn. Needs root for the
// address.
func TestUnverifiedTLSWarning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root, to add an address to lo (ip addr add)")
	}
	const addr = "10.213.7.1"
	if out, err := exec.Command("ip", "addr", "add", addr+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s/32 dev lo: %v %s", addr, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "addr", "del", addr+"/32", "dev", "lo").Run() })
	s := newSource(t, 1)
	c := s.c
	port := forward(t, addr, c)
	dsn := "host=" + addr + " port=" + strconv.Itoa(port) + " user=" + c.User + " dbname=postgres sslmode=disable"
	dest, tsNew := c.TempDir(t), c.TempDir(t)
	r := run(t, 5*time.Minute, env(), script, "-j", "2", "-T", s.tsDir+"="+tsNew, dsn, dest)
	if r.code != 0 {
		t.Fatalf("a run by %s: exit %d\n%s", addr, r.code, r.stderr)
	}
	const warning = "warning: the connection to " + addr + " is not verified"
	if n := strings.Count(r.stderr, warning); n != 1 {
		t.Fatalf("a run by %s with sslmode=disable: %d warnings %q, want one:\n%s", addr, n, warning, r.stderr)
	}
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Contains(line, warning) {
			t.Logf("%s", line)
		}
	}
	s.verifyPlain(t, dest)

	dest2, tsNew2 := c.TempDir(t), c.TempDir(t)
	r = run(t, 5*time.Minute, env(), script, "-j", "2", "-T", s.tsDir+"="+tsNew2, c.DSN(), dest2)
	if r.code != 0 || strings.Contains(r.stderr, "is not verified") {
		t.Fatalf("a run by %s: exit %d, want 0 and no warning:\n%s", c.Host, r.code, r.stderr)
	}
}
