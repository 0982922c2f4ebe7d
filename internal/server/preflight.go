package server

import (
	"context"
	"fmt"
)

// TooManyConnections is the SQLSTATE of "sorry, too many clients already" (and of a role's or database's
// connection limit being reached).
const TooManyConnections = "53300"

// Headroom is what bounds the connections the current role may open: the server-wide slots left to it, its
// role's CONNECTION LIMIT and its database's. Counts include the asking connection.
type Headroom struct {
	MaxConnections int  // max_connections
	Reserved       int  // slots this role may not take: superuser_reserved_connections, and on 16+ reserved_connections unless it has pg_use_reserved_connections
	InUse          int  // client connections to the server now
	Superuser      bool // superusers are held by max_connections only
	RoleLimit      int  // rolconnlimit; -1 for none (or a superuser)
	RoleInUse      int  // connections of this role now
	DBLimit        int  // datconnlimit of the current database; -1 for none (or a superuser)
	DBInUse        int  // connections to the current database now
}

// Free returns how many more connections the role can open besides the asking one, and the limit that
// bounds them: "max_connections", "the role's connection limit" or "the database's connection limit".
func (h Headroom) Free() (int, string) {
	free, by := h.MaxConnections-h.Reserved-h.InUse, "max_connections"
	if h.RoleLimit >= 0 && h.RoleLimit-h.RoleInUse < free {
		free, by = h.RoleLimit-h.RoleInUse, "the role's connection limit"
	}
	if h.DBLimit >= 0 && h.DBLimit-h.DBInUse < free {
		free, by = h.DBLimit-h.DBInUse, "the database's connection limit"
	}
	return max(free, 0), by
}

// clientBackend selects the pg_stat_activity rows that take a max_connections slot. Without the privilege
// to see another role's session its backend_type is NULL; a row with a database is then counted too (it may
// be an autovacuum worker: the count errs on the safe side).
const clientBackend = "(backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL))"

// ConnectionHeadroom reads the connection limits that apply to the current role and the connections in use.
func (c *Conn) ConnectionHeadroom(ctx context.Context) (Headroom, error) {
	reserved := "current_setting('superuser_reserved_connections')::int"
	if c.Major.ReservedConnectionsSetting {
		reserved += " + CASE WHEN pg_has_role('pg_use_reserved_connections', 'USAGE') THEN 0 ELSE current_setting('reserved_connections')::int END"
	}
	q := `SELECT current_setting('max_connections')::int, CASE WHEN r.rolsuper THEN 0 ELSE ` + reserved + ` END,
  (SELECT count(*) FROM pg_stat_activity WHERE ` + clientBackend + `)::int,
  r.rolsuper, CASE WHEN r.rolsuper THEN -1 ELSE r.rolconnlimit END,
  (SELECT count(*) FROM pg_stat_activity WHERE usesysid = r.oid AND ` + clientBackend + `)::int,
  CASE WHEN r.rolsuper THEN -1 ELSE d.datconnlimit END,
  (SELECT count(*) FROM pg_stat_activity WHERE datid = d.oid AND ` + clientBackend + `)::int
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`
	var h Headroom
	err := c.pg.QueryRow(ctx, q).Scan(&h.MaxConnections, &h.Reserved, &h.InUse, &h.Superuser, &h.RoleLimit, &h.RoleInUse, &h.DBLimit, &h.DBInUse)
	if err != nil {
		return Headroom{}, fmt.Errorf("read connection limits: %w", err)
	}
	return h, nil
}

// BackupFunctions returns the exact signatures of the functions a backup calls, for this server's version.
// A grant must name these: the forms with fewer arguments are other functions.
func (c *Conn) BackupFunctions() []string {
	return []string{c.Major.StartFunction(), c.Major.StopFunction(), "pg_ls_dir(text, boolean, boolean)", "pg_stat_file(text, boolean)",
		"pg_read_binary_file(text, bigint, bigint, boolean)"}
}

// MissingGrants returns the functions of BackupFunctions the current role may not execute.
func (c *Conn) MissingGrants(ctx context.Context) ([]string, error) {
	var missing []string
	for _, f := range c.BackupFunctions() {
		var ok bool
		if err := c.pg.QueryRow(ctx, "SELECT has_function_privilege(current_user, $1, 'EXECUTE')", "pg_catalog."+f).Scan(&ok); err != nil {
			return nil, fmt.Errorf("check EXECUTE on %s: %w", f, err)
		}
		if !ok {
			missing = append(missing, f)
		}
	}
	return missing, nil
}
