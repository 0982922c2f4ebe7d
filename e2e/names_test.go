package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
	"github.com/pgbb/pgbb/internal/server"
)

// oddNames are files planted in the data directory whose names are not ASCII, with their contents: Latin-1
// names, not valid in the UTF-8 test cluster's encoding (one in a directory with such a name, one under an
// ASCII directory below it, one big enough to be read in several pieces), and a valid UTF-8 name.
var oddNames = map[string][]byte{
	"caf\xe9.conf":                []byte("a Latin-1 name at the top level\n"),
	"d\xe9j\xe0/r\xe9sum\xe9":     []byte("a Latin-1 name in a directory with a Latin-1 name\n"),
	"d\xe9j\xe0/sub/plain":        []byte("an ASCII name below a Latin-1 directory\n"),
	"d\xe9j\xe0/big\xff":          bytes.Repeat([]byte("0123456789abcdef"), 3<<16+77), // 3 MiB and a bit
	"na\xc3\xafve":                []byte("a valid UTF-8 name\n"),
	"d\xe9j\xe0/back\\slash\ttab": []byte("escaped in the work list\n"),
}

// plantOddNames writes oddNames into the running cluster's data directory, owned by the server's user.
func plantOddNames(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	for name, data := range oddNames {
		p := filepath.Join(c.Dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgtest.ChownToServerUser(c.Dir); err != nil {
		t.Fatal(err)
	}
}

// checkOddNames asserts that dir holds every planted file under exactly its bytes, with its content.
func checkOddNames(t *testing.T, dir string) {
	t.Helper()
	for name, want := range oddNames {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%q: %v", name, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%q: %d bytes, not the %d planted", name, len(got), len(want))
		}
	}
}

// checkManifestNames asserts that backup_manifest names the planted files that are not valid UTF-8 with
// Encoded-Path (hex of the raw bytes) and the others with Path, as backup_manifest.c does.
func checkManifestNames(t *testing.T, manifestPath string) {
	t.Helper()
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Files []map[string]any
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("backup_manifest: %v", err)
	}
	paths, encoded := map[string]bool{}, map[string]bool{}
	for _, f := range m.Files {
		if p, ok := f["Path"].(string); ok {
			paths[p] = true
		}
		if e, ok := f["Encoded-Path"].(string); ok {
			encoded[e] = true
		}
	}
	for name := range oddNames {
		wantPath := name == "na\xc3\xafve" // the only valid UTF-8 one
		if paths[name] != wantPath || encoded[hex.EncodeToString([]byte(name))] == wantPath {
			t.Errorf("%q: Path %v, Encoded-Path %v; want Path %v", name, paths[name], encoded[hex.EncodeToString([]byte(name))], wantPath)
		}
	}
}

// File names are bytes: a data directory holding names that are not valid in the database encoding is
// backed up in plain and tar format, by a role with only the README's grants, name for name and byte for
// byte, and stock pg_verifybackup accepts both.
func TestFileNamesAreBytes(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{DataChecksums: true})
	plantOddNames(t, c)
	// function grants live in each database's catalog
	grants := `GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO bk;
GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO bk;
GRANT EXECUTE ON FUNCTION pg_ls_dir(text, boolean, boolean) TO bk;
GRANT EXECUTE ON FUNCTION pg_stat_file(text, boolean) TO bk;
GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO bk;`
	c.Psql(t, "postgres", "CREATE ROLE bk LOGIN REPLICATION;\n"+grants)
	dsn := strings.Replace(c.DSN(), "user=postgres", "user=bk", 1)
	verifybackup := filepath.Join(c.BinDir, "pg_verifybackup") // the server's major

	t.Run("plain", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "dest")
		r := run(t, 5*time.Minute, env(), script, "-j", "2", dsn, dest)
		if r.code != 0 {
			t.Fatalf("pgbb-basebackup: exit %d\n%s", r.code, r.stderr)
		}
		checkOddNames(t, dest)
		checkManifestNames(t, filepath.Join(dest, "backup_manifest"))
		if v := run(t, 5*time.Minute, env(), verifybackup, dest); v.code != 0 {
			t.Fatalf("pg_verifybackup:\n%s%s", v.stdout, v.stderr)
		}
		if v := run(t, 5*time.Minute, env(), bin("pgbb-pack"), "--verify", dest); v.code != 0 {
			t.Fatalf("pgbb-pack --verify: exit %d\n%s%s", v.code, v.stdout, v.stderr)
		}
	})

	t.Run("tar", func(t *testing.T) {
		backup := filepath.Join(t.TempDir(), "backup")
		r := run(t, 5*time.Minute, env(), script, "-F", "tar", "-j", "2", dsn, backup)
		if r.code != 0 {
			t.Fatalf("pgbb-basebackup -F tar: exit %d\n%s", r.code, r.stderr)
		}
		checkManifestNames(t, filepath.Join(backup, "backup_manifest"))
		if v := run(t, 5*time.Minute, env(), bin("pgbb-pack"), "--verify", backup); v.code != 0 {
			t.Fatalf("pgbb-pack --verify: exit %d\n%s%s", v.code, v.stdout, v.stderr)
		}
		// names that are not ASCII are in GNU headers, raw (a pax path record would be read as UTF-8)
		xz := exec.Command("xz", "-dc", filepath.Join(backup, "base.tar.xz"))
		raw, err := xz.Output()
		if err != nil {
			t.Fatalf("xz -dc base.tar.xz: %v", err)
		}
		formats := map[string]tar.Format{}
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("base.tar: %v", err)
			}
			formats[strings.TrimSuffix(h.Name, "/")] = h.Format
		}
		for _, name := range []string{"caf\xe9.conf", "d\xe9j\xe0", "d\xe9j\xe0/r\xe9sum\xe9", "na\xc3\xafve", "PG_VERSION"} {
			if gnu := formats[name] == tar.FormatGNU; gnu != (name != "PG_VERSION") {
				t.Errorf("member %q has format %v", name, formats[name])
			}
		}
		// stock tar extracts the raw bytes whatever the locale
		for _, locale := range []string{"C", "C.UTF-8"} {
			data := filepath.Join(t.TempDir(), "data")
			os.Mkdir(data, 0o700)
			for _, x := range [][2]string{{"base.tar.xz", data}, {"pg_wal.tar.xz", filepath.Join(data, "pg_wal")}} {
				archive, dir := x[0], x[1]
				cmd := exec.Command("tar", "-xJf", filepath.Join(backup, archive), "-C", dir)
				cmd.Env = append(os.Environ(), "LC_ALL="+locale)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Run(); err != nil || stderr.Len() > 0 {
					t.Fatalf("LC_ALL=%s tar -xJf %s: %v %s", locale, archive, err, stderr.String())
				}
			}
			checkOddNames(t, data)
			b, _ := os.ReadFile(filepath.Join(backup, "backup_manifest"))
			os.WriteFile(filepath.Join(data, "backup_manifest"), b, 0o600)
			if v := run(t, 5*time.Minute, env(), verifybackup, data); v.code != 0 {
				t.Fatalf("pg_verifybackup of the extracted tar (LC_ALL=%s):\n%s%s", locale, v.stdout, v.stderr)
			}
		}
	})

	// The server side in databases of other encodings: where every byte sequence is valid (SQL_ASCII,
	// LATIN1), and a multi-byte one (EUC_JP). Names come back as their bytes and are found again.
	t.Run("encodings", func(t *testing.T) {
		for _, enc := range []string{"SQL_ASCII", "LATIN1", "EUC_JP"} {
			db := "db_" + strings.ToLower(enc)
			c.Psql(t, "postgres", "CREATE DATABASE "+db+" ENCODING '"+enc+"' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
			c.Psql(t, db, grants)
		}
		ctx := context.Background()
		for _, db := range []string{"postgres", "db_sql_ascii", "db_latin1", "db_euc_jp"} {
			conn, err := server.Connect(ctx, strings.Replace(dsn, "dbname=postgres", "dbname="+db, 1), "pgbb-test", false)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			top, err := conn.ListDir(ctx, "")
			if err != nil {
				t.Fatalf("%s: list the data directory: %v", db, err)
			}
			names := map[string]bool{}
			for _, e := range top {
				names[e.Name] = true
			}
			for _, n := range []string{"caf\xe9.conf", "d\xe9j\xe0", "na\xc3\xafve", "PG_VERSION"} {
				if !names[n] {
					t.Errorf("%s: the data directory's listing lacks %q", db, n)
				}
			}
			sub, err := conn.ListDir(ctx, "d\xe9j\xe0")
			if err != nil {
				t.Fatalf("%s: list d\\xe9j\\xe0: %v", db, err)
			}
			var got []string
			for _, e := range sub {
				got = append(got, e.Name)
			}
			if want := []string{"back\\slash\ttab", "big\xff", "r\xe9sum\xe9", "sub"}; strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("%s: d\\xe9j\\xe0 lists %q, want %q", db, got, want)
			}
			if gone, err := conn.ListDir(ctx, "d\xe9j\xe0/gone\xe9"); err != nil || len(gone) != 0 {
				t.Errorf("%s: a missing directory lists %v, %v", db, gone, err)
			}
			// ASCII and other paths mixed in one batch, several pieces of one file, vanished files
			big := oddNames["d\xe9j\xe0/big\xff"]
			rs := []server.Range{
				{Path: "PG_VERSION", Length: 100},
				{Path: "d\xe9j\xe0/big\xff", Offset: 0, Length: 1 << 20},
				{Path: "d\xe9j\xe0/big\xff", Offset: 1 << 20, Length: 1 << 20},
				{Path: "caf\xe9.conf", Length: 1000},
				{Path: "d\xe9j\xe0/big\xff", Offset: 3 << 20, Length: 1 << 20},
				{Path: "d\xe9j\xe0/sub/plain", Length: 1000},
				{Path: "gone\xe9", Length: 10},
				{Path: "gone\xe9/x", Length: 10},
				{Path: "na\xc3\xafve", Offset: 2, Length: 5},
				{Path: "global/pg_control", Length: 8},
			}
			want := [][]byte{nil, big[:1<<20], big[1<<20 : 2<<20], oddNames["caf\xe9.conf"], big[3<<20:], oddNames["d\xe9j\xe0/sub/plain"], nil, nil, oddNames["na\xc3\xafve"][2:7], nil}
			i := 0
			err = conn.ReadRanges(ctx, rs, func(k int, data []byte, missing bool) error {
				if k != i {
					t.Errorf("%s: piece %d came as %d", db, i, k)
				}
				i++
				switch {
				case rs[k].Path == "PG_VERSION" || rs[k].Path == "global/pg_control":
					if missing || len(data) == 0 {
						t.Errorf("%s: %s: missing %v, %d bytes", db, rs[k].Path, missing, len(data))
					}
				case want[k] == nil:
					if !missing {
						t.Errorf("%s: %q is not reported missing", db, rs[k].Path)
					}
				case missing || !bytes.Equal(data, want[k]):
					t.Errorf("%s: %q at %d: missing %v, %d bytes, want %d", db, rs[k].Path, rs[k].Offset, missing, len(data), len(want[k]))
				}
				return nil
			})
			if err != nil || i != len(rs) {
				t.Fatalf("%s: ReadRanges: %v after %d pieces", db, err, i)
			}
			b, missing, err := conn.ReadFile(ctx, []byte("x"), "d\xe9j\xe0/r\xe9sum\xe9", 2, 5)
			if err != nil || missing || string(b) != "x"+string(oddNames["d\xe9j\xe0/r\xe9sum\xe9"][2:7]) {
				t.Errorf("%s: ReadFile: %q %v %v", db, b, missing, err)
			}
			if b, missing, err := conn.ReadFile(ctx, nil, "gone\xe9", 0, 5); err != nil || !missing || len(b) != 0 {
				t.Errorf("%s: ReadFile of a vanished file: %q %v %v", db, b, missing, err)
			}
		}
	})
}
