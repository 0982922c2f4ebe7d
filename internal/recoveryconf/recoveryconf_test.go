package recoveryconf

import (
	"strings"
	"testing"
)

func TestPrimaryConninfo(t *testing.T) {
	r := Resolved{Host: "db1.example", Port: 5433, User: "backup"}
	for _, c := range []struct {
		name, dsn string
		env       []string
		password  bool
		want      string
	}{
		{"conninfo", "host=db1.example port=5433 user=backup dbname=postgres sslmode=verify-full password=s3cret", nil, false,
			"user=backup host=db1.example port=5433 sslmode=verify-full"},
		{"password asked for", "host=db1.example user=backup password='it\\'s' sslmode=require", nil, true,
			`user=backup password='it\'s' host=db1.example port=5433 sslmode=require`},
		{"URI", "postgresql://backup:pw@db1.example:5433/postgres?sslmode=verify-ca&application_name=x&sslrootcert=/etc/ca%20dir/root.crt", nil, false,
			"user=backup host=db1.example port=5433 sslmode=verify-ca sslrootcert='/etc/ca dir/root.crt'"},
		{"environment", "", []string{"PGSSLMODE=require", "PGPASSWORD=pw", "PGHOST=ignored", "PGCONNECT_TIMEOUT=5"}, false,
			"user=backup host=db1.example port=5433 connect_timeout=5 sslmode=require"},
		{"DSN over environment", "sslmode=disable", []string{"PGSSLMODE=require"}, false,
			"user=backup host=db1.example port=5433 sslmode=disable"},
	} {
		got, err := PrimaryConninfo(c.dsn, c.env, r, c.password)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

func TestParseQuoting(t *testing.T) {
	kv, err := Parse(`host = /tmp  user='a b' password='x\'y\\z' options=-cfoo\ bar`)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"host": "/tmp", "user": "a b", "password": `x'y\z`, "options": "-cfoo bar"} {
		if kv[k] != want {
			t.Errorf("%s = %q, want %q", k, kv[k], want)
		}
	}
	for _, bad := range []string{"host", "user='open", "=x"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if q := quoteValue(`x'y\z`); q != `'x\'y\\z'` {
		t.Errorf("quoteValue = %s", q)
	}
	line := AutoConfLines(`user=a password='x\'y'`)
	if !strings.Contains(line, `primary_conninfo = 'user=a password=''x\\''y'''`) {
		t.Errorf("AutoConfLines = %q", line)
	}
}

func TestPasswordGiven(t *testing.T) {
	for _, c := range []struct {
		dsn  string
		env  []string
		want string
	}{
		{"host=db user=u", nil, ""},
		{"host=db user=u", []string{"PGPASSWORDX=a", "PGUSER=u"}, ""},
		{"host=db password='s e'", nil, "the DSN"},
		{"postgresql://u:secret@db/x", nil, "the DSN"},
		{"postgresql://u@db/x?password=secret", nil, "the DSN"},
		{"postgresql://u@db/x", nil, ""},
		{"host=db", []string{"PGPASSWORD=s"}, "PGPASSWORD"},
		{"host=db", []string{"PGPASSWORD="}, ""},
		{"", []string{"PGPASSFILE=/x"}, ""},
	} {
		got, err := PasswordGiven(c.dsn, c.env)
		if err != nil || got != c.want {
			t.Errorf("PasswordGiven(%q, %q) = %q, %v; want %q", c.dsn, c.env, got, err, c.want)
		}
	}
	if _, err := PasswordGiven("host", nil); err == nil {
		t.Error("a bad DSN was taken")
	}
}
