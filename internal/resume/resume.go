// Package resume holds the rules of resuming an incomplete plain backup (docs/resume.md): the state file
// that marks a kept DEST, and the comparison that proves a stored page equal to the server's. It imports
// only the standard library.
package resume

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// StateName is the state file's name in DEST. Work items may not write names starting with ".pgbb"
// (datadir.CheckWorkItemPath).
const StateName = ".pgbb-incomplete"

// Version is the state file's version.
const Version = 1

// PageSize is the unit of comparison: the server's digests are of each PageSize bytes of a piece from its
// start (the last one may be shorter).
const PageSize = 8192

// SubBlockSize is the unit of the second level of comparison: a page whose digest differs but whose stored
// bytes are whole is compared again per SubBlockSize bytes, and only the sub-blocks that differ are
// fetched (docs/incremental.md, section 5: an updated row changes a few hundred bytes of its page).
const SubBlockSize = 256

// SubDigestSize is the size of a sub-block's digest: the first 16 bytes of its SHA-256. Two different
// sub-blocks pass for equal with a chance of 2^-128, which is far below that of an undetected error of
// the disks and links the bytes cross; half the bytes of the full digest halve the second level's cost
// (6.25% of the pages that differ, at 256-byte sub-blocks). 256 bytes, measured (docs/BENCHMARKS.md):
// an incremental after pgbench sent 9.9% of a full with 256-byte sub-blocks, 10.3% with 512.
const SubDigestSize = 16

// DigestSize is the size of one page's digest (SHA-256).
const DigestSize = sha256.Size

// Tablespace is one tablespace of the state file: its oid, its location on the server and the directory
// its files are in here.
type Tablespace struct {
	OID       uint32 `json:"oid"`
	Location  string `json:"location"`
	Directory string `json:"directory"`
}

// State is the content of the state file.
type State struct {
	Version       int          `json:"pgbb_incomplete"`
	SystemID      string       `json:"system_identifier"`
	ServerVersion int          `json:"server_version"`
	Format        string       `json:"format"`
	BackupID      string       `json:"backup_id"`
	Runs          int          `json:"runs"`
	Tablespaces   []Tablespace `json:"tablespaces"`
}

// SystemIdentifier returns the state's system identifier as a number.
func (s State) SystemIdentifier() (uint64, error) {
	return strconv.ParseUint(s.SystemID, 10, 64)
}

// HasLocation reports whether the state names a tablespace at the server location loc.
func (s State) HasLocation(loc string) bool {
	for _, t := range s.Tablespaces {
		if filepath.Clean(t.Location) == filepath.Clean(loc) {
			return true
		}
	}
	return false
}

// ErrNoState says DEST holds no state file.
var ErrNoState = errors.New("no state file")

// Read reads the state file of dest. It returns ErrNoState (wrapped) when there is none.
func Read(dest string) (State, error) {
	b, err := os.ReadFile(filepath.Join(dest, StateName))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, fmt.Errorf("%w in %s", ErrNoState, dest)
	}
	if err != nil {
		return State{}, err
	}
	var s State
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("%s: %w", StateName, err)
	}
	if s.Version != Version {
		return State{}, fmt.Errorf("%s: version %d, this pgbb reads version %d", StateName, s.Version, Version)
	}
	if _, err := s.SystemIdentifier(); err != nil {
		return State{}, fmt.Errorf("%s: bad system identifier %q", StateName, s.SystemID)
	}
	if s.Format != "plain" {
		return State{}, fmt.Errorf("%s: format %q, only plain backups resume", StateName, s.Format)
	}
	for _, t := range s.Tablespaces {
		if !filepath.IsAbs(t.Location) || !filepath.IsAbs(t.Directory) {
			return State{}, fmt.Errorf("%s: tablespace %d: locations must be absolute", StateName, t.OID)
		}
	}
	return s, nil
}

// Encode returns the state file's bytes.
func Encode(s State) []byte {
	s.Version = Version
	b, _ := json.MarshalIndent(s, "", "  ")
	return append(b, '\n')
}

// ProvedPages compares a piece's stored bytes with the server's digests of the same range, read after the
// backup's start: digests holds DigestSize bytes per page of the serverLen bytes the server read. Page k is
// proved (true) when stored holds all its bytes and their SHA-256 equals the server's; a stored range that
// is short, missing or different proves nothing (docs/resume.md, "Why a reused page is correct").
func ProvedPages(serverLen int, digests, stored []byte) ([]bool, error) {
	return ProvedUnits(PageSize, DigestSize, serverLen, digests, stored)
}

// ProvedUnits is ProvedPages for units of unit bytes and digests of their SHA-256's first size bytes: the
// second level of the comparison proves the sub-blocks of the pages that differ (SubBlockSize,
// SubDigestSize).
func ProvedUnits(unit, size, serverLen int, digests, stored []byte) ([]bool, error) {
	units := (serverLen + unit - 1) / unit
	if len(digests) != units*size {
		return nil, fmt.Errorf("%d bytes of digests for %d units of %d bytes", len(digests), units, unit)
	}
	proved := make([]bool, units)
	for k := range proved {
		lo, hi := k*unit, min((k+1)*unit, serverLen)
		if hi > len(stored) {
			break
		}
		sum := sha256.Sum256(stored[lo:hi])
		proved[k] = bytes.Equal(sum[:size], digests[k*size:(k+1)*size])
	}
	return proved, nil
}
