// Package backupid is the one home of the backup id (docs/worklist.md): pgbb-xlog builds it when the backup
// starts, every record stream and work list carries it, and pgbb-fetch reads the start LSN out of it.
//
// A backup id is written <system identifier>-<timeline>-<start LSN as %X-%X>-<8 hex digits of a random
// nonce>, for example 7312345678901234567-1-0-3000028-9f3c21ab: it names the cluster, the timeline and the
// start, and two backups started at the same LSN (a retry) still differ.
package backupid

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ID is a parsed backup id.
type ID struct {
	SystemID uint64
	Timeline uint32
	StartLSN uint64
	Nonce    uint32
}

// New returns the backup id of a backup of system sysid started on timeline tli at lsn.
func New(sysid uint64, tli uint32, lsn uint64, nonce uint32) string {
	return fmt.Sprintf("%d-%d-%X-%X-%08x", sysid, tli, uint32(lsn>>32), uint32(lsn), nonce)
}

// Parse reads a backup id as New writes it (hex digits in either case).
func Parse(id string) (ID, error) {
	f := strings.Split(id, "-")
	bad := fmt.Errorf("backup id %q does not have the form pgbb-xlog gives", id)
	if len(f) != 5 || len(f[4]) != 8 {
		return ID{}, bad
	}
	sys, err1 := strconv.ParseUint(f[0], 10, 64)
	tli, err2 := strconv.ParseUint(f[1], 10, 32)
	hi, err3 := strconv.ParseUint(f[2], 16, 32)
	lo, err4 := strconv.ParseUint(f[3], 16, 32)
	nonce, err5 := strconv.ParseUint(f[4], 16, 32)
	for _, err := range []error{err1, err2, err3, err4, err5} {
		if err != nil {
			return ID{}, bad
		}
	}
	return ID{SystemID: sys, Timeline: uint32(tli), StartLSN: hi<<32 | lo, Nonce: uint32(nonce)}, nil
}

var pattern = regexp.MustCompile(`^[0-9A-Za-z-]{1,128}$`)

// Valid reports whether id has the form a work-list trailer, a stream's begin record and PGBB_BACKUP_ID may
// carry: 1 to 128 ASCII letters, digits and '-' (docs/worklist.md). It is looser than Parse, so that an
// inspect-only list ("inspect-only") reads, and pgbb-pack refuses it for not being the backup's.
func Valid(id string) bool { return pattern.MatchString(id) }
