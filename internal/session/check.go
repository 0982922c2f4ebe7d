package session

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/server"
)

// CheckOptions for Check.
type CheckOptions struct {
	DSN  string
	Jobs int // fetch jobs that will run at once; 0 checks for the session alone
	// Prior, when set, is the manifest of the prior backup of an incremental run: the server must take
	// incremental backups (17 or later, summarize_wal on) of the cluster the prior is of.
	Prior *manifest.Manifest
	Log   *cliapp.Logger
}

// Check is the pre-flight of a backup: on one short connection it asks whether the run can start and
// finish, and refuses (exit 2, nothing started) when it cannot: the role lacks
// EXECUTE on a function the backup calls, or fewer connections are free than the session and o.Jobs fetch
// jobs hold at once (pgbb-list runs before the jobs, on one). The figures are a snapshot: other clients may
// take the slots before the jobs do, and a connection pooler's limits are not the server's.
func Check(ctx context.Context, o CheckOptions) error {
	conn, err := server.Connect(ctx, o.DSN, "pgbb-xlog", false)
	if err != nil {
		return server.ConnectFailed(err, "the server has no connection free for the backup: close idle connections or raise max_connections")
	}
	defer conn.Close()
	missing, err := conn.MissingGrants(ctx)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		var grants []string
		for _, f := range missing {
			grants = append(grants, "GRANT EXECUTE ON FUNCTION "+f+" TO "+conn.User)
		}
		return cliapp.Usage(strings.Join(grants, "; "), "role %q may not execute %s, which the backup calls", conn.User, strings.Join(missing, ", "))
	}
	if o.Prior != nil {
		if err := checkPrior(ctx, conn, o.Prior); err != nil {
			return err
		}
	}
	h, err := conn.ConnectionHeadroom(ctx)
	if err != nil {
		return err
	}
	free, by := h.Free()
	free++ // this connection ends before the run starts
	need := 1 + max(o.Jobs, 1)
	o.Log.Info("connections: the run needs %d at once; %d free for role %s (max_connections %d, %d reserved, %d in use)", need, free, conn.User, h.MaxConnections, h.Reserved, h.InUse-1)
	if free < need {
		what := fmt.Sprintf("max_connections = %d, %d in use", h.MaxConnections, h.InUse-1)
		if h.Reserved > 0 {
			what = fmt.Sprintf("max_connections = %d, %d reserved for superusers, %d in use", h.MaxConnections, h.Reserved, h.InUse-1)
		}
		switch by {
		case "the role's connection limit":
			what = fmt.Sprintf("CONNECTION LIMIT %d of role %s, %d in use", h.RoleLimit, conn.User, h.RoleInUse-1)
		case "the database's connection limit":
			what = fmt.Sprintf("CONNECTION LIMIT %d of the database, %d in use", h.DBLimit, h.DBInUse-1)
		}
		hint := "close idle connections, or raise " + by
		if free >= 2 {
			hint = fmt.Sprintf("run at most %d jobs (pgbb-basebackup -j %d), close idle connections, or raise %s", free-1, free-1, by)
		}
		return cliapp.Usage(hint, "%d fetch jobs and the backup session need %d connections at once, but role %s can open %d (%s)",
			max(o.Jobs, 1), need, conn.User, free, what)
	}
	return nil
}

// checkPrior refuses an incremental run that the server would refuse once started: a server that takes
// no incremental backups, or a prior of another cluster (pgbb-list checks the rest, inside the backup).
func checkPrior(ctx context.Context, conn *server.Conn, prior *manifest.Manifest) error {
	if err := conn.CheckSummaries(ctx); err != nil {
		var ce *cliapp.Error
		if errors.As(err, &ce) {
			return &cliapp.Error{Code: cliapp.ExitUsage, Err: ce.Err, Hint: ce.Hint}
		}
		return err
	}
	_, info, err := conn.ReadControlFile(ctx)
	if err != nil {
		return err
	}
	if prior.SystemID != info.SystemID {
		return cliapp.Usage("give the manifest of an earlier backup of this cluster",
			"the prior backup is of system %d, this server is system %d", prior.SystemID, info.SystemID)
	}
	return nil
}
