// Package recoveryconf makes what -R writes into a plain backup so that it starts as a streaming standby
// of its source (docs/toolbox.md, section 2), as pg_basebackup -R does (src/fe_utils/recovery_gen.c):
// primary_conninfo from the backup's connection string, for postgresql.auto.conf. It is pure: the caller
// gives it the environment and writes the files.
package recoveryconf

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// envKeywords are the libpq environment variables a connection string falls back to, by keyword
// (libpq's PQconninfoOptions). PGHOST, PGPORT and PGUSER are resolved by the caller (Resolved).
var envKeywords = map[string]string{
	"PGPASSWORD":              "password",
	"PGPASSFILE":              "passfile",
	"PGCHANNELBINDING":        "channel_binding",
	"PGCONNECT_TIMEOUT":       "connect_timeout",
	"PGSSLMODE":               "sslmode",
	"PGSSLNEGOTIATION":        "sslnegotiation",
	"PGSSLCERT":               "sslcert",
	"PGSSLKEY":                "sslkey",
	"PGSSLROOTCERT":           "sslrootcert",
	"PGSSLCRL":                "sslcrl",
	"PGSSLCRLDIR":             "sslcrldir",
	"PGSSLSNI":                "sslsni",
	"PGSSLCERTMODE":           "sslcertmode",
	"PGREQUIREPEER":           "requirepeer",
	"PGSSLMINPROTOCOLVERSION": "ssl_min_protocol_version",
	"PGSSLMAXPROTOCOLVERSION": "ssl_max_protocol_version",
	"PGGSSENCMODE":            "gssencmode",
	"PGKRBSRVNAME":            "krbsrvname",
	"PGGSSLIB":                "gsslib",
	"PGGSSDELEGATION":         "gssdelegation",
	"PGTARGETSESSIONATTRS":    "target_session_attrs",
	"PGLOADBALANCEHOSTS":      "load_balance_hosts",
	"PGREQUIREAUTH":           "require_auth",
}

// left out of primary_conninfo whatever the DSN says: the walreceiver connects for replication to no
// database (recovery_gen.c leaves out dbname and replication), names itself, and takes no options meant
// for a session
var leftOut = map[string]bool{"dbname": true, "replication": true, "application_name": true,
	"fallback_application_name": true, "options": true, "service": true, "servicefile": true}

// Resolved is what the backup's connection resolved: its host (or socket directory), port and user.
type Resolved struct {
	Host string
	Port uint16
	User string
}

// PrimaryConninfo returns primary_conninfo for a backup taken over dsn (a libpq conninfo or URI) with the
// environment env (KEY=VALUE, as os.Environ) and the resolved host, port and user: every keyword the DSN
// or a PG* variable set, but those a walreceiver does not use, and the password only when withPassword.
func PrimaryConninfo(dsn string, env []string, r Resolved, withPassword bool) (string, error) {
	kv := map[string]string{}
	for _, e := range env {
		k, v, ok := strings.Cut(e, "=")
		if kw := envKeywords[k]; ok && kw != "" && v != "" {
			kv[kw] = v
		}
	}
	given, err := Parse(dsn)
	if err != nil {
		return "", err
	}
	for k, v := range given {
		kv[k] = v
	}
	kv["host"], kv["port"], kv["user"] = r.Host, fmt.Sprint(r.Port), r.User
	delete(kv, "hostaddr") // the resolved host is what was reached
	if !withPassword {
		delete(kv, "password")
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		if !leftOut[k] && kv[k] != "" {
			keys = append(keys, k)
		}
	}
	// the first three as pg_basebackup writes them, the rest in a stable order
	rank := map[string]int{"user": 1, "password": 2, "host": 3, "port": 4}
	sort.Slice(keys, func(i, j int) bool {
		ri, rj := rank[keys[i]], rank[keys[j]]
		if ri == 0 {
			ri = 10
		}
		if rj == 0 {
			rj = 10
		}
		if ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + quoteValue(kv[k])
	}
	return strings.Join(parts, " "), nil
}

// The files -R writes into a backup (src/fe_utils/recovery_gen.c, WriteRecoveryConfig).
const (
	AutoConf      = "postgresql.auto.conf"
	StandbySignal = "standby.signal"
)

// AutoConfLines returns the lines -R appends to postgresql.auto.conf (WriteRecoveryConfig,
// recovery_gen.c): a comment and primary_conninfo, the conninfo's quotes and backslashes doubled as a
// configuration value needs (escape_quotes).
func AutoConfLines(conninfo string) string {
	esc := strings.NewReplacer(`'`, `''`, `\`, `\\`).Replace(conninfo)
	return "# Added by pgbb-pack -R (--write-recovery-conf)\nprimary_conninfo = '" + esc + "'\n"
}

// quoteValue quotes a conninfo value as libpq reads it: bare when it holds no space, quote or backslash
// and is not empty, else in single quotes with ' and \ escaped by a backslash (appendConnStrVal).
func quoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\f\v'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Parse returns the keywords and values of a libpq connection string: keyword=value pairs (values bare
// or in single quotes with backslash escapes) or a postgresql:// (postgres://) URI.
func Parse(dsn string) (map[string]string, error) {
	if strings.HasPrefix(dsn, "postgresql://") || strings.HasPrefix(dsn, "postgres://") {
		return parseURI(dsn)
	}
	kv := map[string]string{}
	s := dsn
	for {
		s = strings.TrimLeft(s, " \t\n\r\f\v")
		if s == "" {
			return kv, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("bad connection string: missing \"=\" after %q", strings.Fields(s)[0])
		}
		key := strings.TrimRight(s[:eq], " \t\n\r\f\v")
		s = strings.TrimLeft(s[eq+1:], " \t\n\r\f\v")
		var val strings.Builder
		if strings.HasPrefix(s, "'") {
			i, closed := 1, false
			for ; i < len(s); i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
					val.WriteByte(s[i])
				} else if s[i] == '\'' {
					closed = true
					break
				} else {
					val.WriteByte(s[i])
				}
			}
			if !closed {
				return nil, fmt.Errorf("bad connection string: unterminated quoted value of %s", key)
			}
			s = s[i+1:]
		} else {
			i := 0
			for ; i < len(s) && !strings.ContainsRune(" \t\n\r\f\v", rune(s[i])); i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
			s = s[i:]
		}
		kv[key] = val.String()
	}
}

// parseURI reads a postgresql:// URI: user and password, hosts and ports, the database, and the query's
// keywords.
func parseURI(dsn string) (map[string]string, error) {
	// the authority may list several host:port pairs, which net/url refuses: it is split here
	scheme, rest, _ := strings.Cut(dsn, "://")
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	u, err := url.Parse(scheme + "://x" + rest[end:])
	if err != nil {
		return nil, fmt.Errorf("bad connection URI: %v", err)
	}
	kv := map[string]string{}
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		user, pass, hasPass := strings.Cut(auth[:at], ":")
		if kv["user"], err = url.PathUnescape(user); err != nil {
			return nil, fmt.Errorf("bad connection URI: %v", err)
		}
		if hasPass {
			if kv["password"], err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("bad connection URI: %v", err)
			}
		}
		auth = auth[at+1:]
	}
	var hosts, ports []string
	for _, hp := range strings.Split(auth, ",") {
		if hp == "" {
			continue
		}
		h, p := hp, ""
		if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.HasSuffix(hp, "]") {
			h, p = hp[:i], hp[i+1:]
		}
		h, err := url.PathUnescape(strings.Trim(h, "[]"))
		if err != nil {
			return nil, fmt.Errorf("bad connection URI: %v", err)
		}
		hosts, ports = append(hosts, h), append(ports, p)
	}
	if len(hosts) > 0 {
		kv["host"] = strings.Join(hosts, ",")
		if p := strings.Trim(strings.Join(ports, ","), ","); p != "" {
			kv["port"] = p
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		kv["dbname"] = db
	}
	for k, vs := range u.Query() {
		if len(vs) > 0 {
			kv[k] = vs[len(vs)-1]
		}
	}
	return kv, nil
}

// PasswordGiven says where a password is given in dsn or the environment env (KEY=VALUE, as os.Environ):
// "the DSN" for a password keyword (or a URI's user:password), "PGPASSWORD", or "" when neither holds
// one. A password file (~/.pgpass, PGPASSFILE) is not given here: it stays on its host.
func PasswordGiven(dsn string, env []string) (string, error) {
	kv, err := Parse(dsn)
	if err != nil {
		return "", err
	}
	if kv["password"] != "" {
		return "the DSN", nil
	}
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PGPASSWORD="); ok && v != "" {
			return "PGPASSWORD", nil
		}
	}
	return "", nil
}
