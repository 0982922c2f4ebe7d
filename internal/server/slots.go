package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/pgbb/pgbb/internal/wal"
)

// Slot is a row of pg_replication_slots, as pgbb-xlog --continuous needs it (docs/continuous-wal.md).
type Slot struct {
	Physical   bool
	Temporary  bool
	ActivePID  int     // 0 when no process holds it
	RestartLSN wal.LSN // 0 when the slot reserves no WAL
	WALStatus  string  // "" on servers without the column's value
}

// Slot returns the named slot; found is false when there is none.
func (c *Conn) Slot(ctx context.Context, name string) (s Slot, found bool, err error) {
	var typ string
	var pid *int32
	var restart, status *string
	err = c.pg.QueryRow(ctx, `SELECT slot_type, temporary, active_pid, restart_lsn::text, wal_status
FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&typ, &s.Temporary, &pid, &restart, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, false, nil
	}
	if err != nil {
		return s, false, err
	}
	s.Physical = typ == "physical"
	if pid != nil {
		s.ActivePID = int(*pid)
	}
	if status != nil {
		s.WALStatus = *status
	}
	if restart != nil {
		if s.RestartLSN, err = wal.ParseLSN(*restart); err != nil {
			return s, true, err
		}
	}
	return s, true, nil
}

// CreatePermanentSlot creates a physical slot that reserves WAL at once and outlives the session
// (pg_create_physical_replication_slot(name, immediately_reserve => true)).
func (c *Conn) CreatePermanentSlot(ctx context.Context, name string) error {
	_, err := c.pg.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, false)", name)
	return err
}

// AdvanceSlot moves the slot's restart_lsn forward to lsn (pg_replication_slot_advance; the server caps
// it at its flush or replay position and never moves it back) and returns where it now is.
func (c *Conn) AdvanceSlot(ctx context.Context, name string, lsn wal.LSN) (wal.LSN, error) {
	var s string
	if err := c.pg.QueryRow(ctx, "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::pg_lsn)", name, lsn.String()).Scan(&s); err != nil {
		return 0, err
	}
	return wal.ParseLSN(s)
}

// InsertTimeline returns the timeline a primary writes WAL on: pg_walfile_name names the file of the
// flush position on the current insert timeline (xlogfuncs.c). It fails during recovery.
func (c *Conn) InsertTimeline(ctx context.Context) (uint32, error) {
	var name string
	if err := c.pg.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_flush_lsn())").Scan(&name); err != nil {
		return 0, err
	}
	if len(name) < 8 {
		return 0, fmt.Errorf("bad WAL file name %q", name)
	}
	tli, err := strconv.ParseUint(name[:8], 16, 32)
	if err != nil || tli == 0 {
		return 0, fmt.Errorf("bad WAL file name %q", name)
	}
	return uint32(tli), nil
}

// DropSlot drops the named slot.
func (c *Conn) DropSlot(ctx context.Context, name string) error {
	_, err := c.pg.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name)
	return err
}
