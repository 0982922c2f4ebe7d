// Package pgversion is the one home for what differs between the PostgreSQL majors pgbb supports: the
// backup functions, the pg_control layout, the WAL page magic, the backup_manifest version and the empty
// directories a base backup holds. Every other package asks this table instead of comparing version
// numbers. It imports only the standard library.
//
// Supporting a new major means one row in majors (from that branch's xlog_internal.h, pg_control.h,
// backup_manifest.c and basebackup.c) plus its run in `make test-matrix`.
package pgversion

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Major is what pgbb needs to know of one PostgreSQL major version.
type Major struct {
	// Major is the major version number (13, 14, ...).
	Major int

	// LegacyBackupAPI: the backup is started with pg_start_backup(label, fast, exclusive => false) and
	// stopped with pg_stop_backup(exclusive => false, wait_for_archive) (13 and 14). From 15 on the
	// functions are pg_backup_start(label, fast) and pg_backup_stop(wait_for_archive) (xlogfuncs.c).
	LegacyBackupAPI bool

	// WALPageMagic is XLOG_PAGE_MAGIC (src/include/access/xlog_internal.h of the branch).
	WALPageMagic uint16

	// ControlVersion is PG_CONTROL_VERSION and ControlCRCOffset is offsetof(ControlFileData, crc) on
	// 64-bit little-endian builds (src/include/catalog/pg_control.h of the branch). The CRC32C covers the
	// bytes before it.
	ControlVersion   uint32
	ControlCRCOffset int

	// ManifestVersion is the backup_manifest version the branch's backup_manifest.c writes: 1, or 2 from
	// 17 on, which adds System-Identifier.
	ManifestVersion int

	// WALDirs are the directories below pg_wal that a base backup holds, empty (basebackup.c, sendDir:
	// archive_status always, summaries from 17 for WAL summarization).
	WALDirs []string

	// ExcludedFiles are file names left out at any depth beyond those of every supported major (basebackup.c,
	// excludeFiles: .DS_Store from 17).
	ExcludedFiles []string

	// ReservedConnectionsSetting: the branch has reserved_connections, slots kept for roles with
	// pg_use_reserved_connections besides superuser_reserved_connections (16 on; postinit.c).
	ReservedConnectionsSetting bool

	// IdleSessionTimeoutSetting: the branch has idle_session_timeout (14 on), which a backup session
	// turns off.
	IdleSessionTimeoutSetting bool

	// StatsTempDirSetting: the branch has the stats_temp_directory setting, whose directory basebackup.c
	// also empties (13 and 14; removed in 15 with the shared-memory statistics).
	StatsTempDirSetting bool
}

// WALDirPaths are WALDirs as paths relative to the data directory ("pg_wal/archive_status", ...).
func (m Major) WALDirPaths() []string {
	out := make([]string, len(m.WALDirs))
	for i, d := range m.WALDirs {
		out[i] = "pg_wal/" + d
	}
	return out
}

// AnyWALDirPaths are the WALDirPaths of every supported major, for a writer that does not know the
// server's (a fetch job writing into the target; pgbb-pack's ledger checks the major's own).
func AnyWALDirPaths() []string {
	var out []string
	for _, m := range majors {
		for _, p := range m.WALDirPaths() {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// StartFunction is the signature of the function that starts a backup, as a GRANT names it.
func (m Major) StartFunction() string {
	if m.LegacyBackupAPI {
		return "pg_start_backup(text, boolean, boolean)"
	}
	return "pg_backup_start(text, boolean)"
}

// StopFunction is the signature of the function that stops a backup, as a GRANT names it.
func (m Major) StopFunction() string {
	if m.LegacyBackupAPI {
		return "pg_stop_backup(boolean, boolean)"
	}
	return "pg_backup_stop(boolean)"
}

// majors is the table, one row per supported major.
var majors = []Major{
	{Major: 13, LegacyBackupAPI: true, WALPageMagic: 0xD106, ControlVersion: 1300, ControlCRCOffset: 288, ManifestVersion: 1,
		WALDirs: []string{"archive_status"}, StatsTempDirSetting: true},
	{Major: 14, LegacyBackupAPI: true, WALPageMagic: 0xD10D, ControlVersion: 1300, ControlCRCOffset: 288, ManifestVersion: 1,
		WALDirs: []string{"archive_status"}, StatsTempDirSetting: true, IdleSessionTimeoutSetting: true},
	{Major: 15, WALPageMagic: 0xD110, ControlVersion: 1300, ControlCRCOffset: 288, ManifestVersion: 1,
		WALDirs: []string{"archive_status"}, IdleSessionTimeoutSetting: true},
	{Major: 16, WALPageMagic: 0xD113, ControlVersion: 1300, ControlCRCOffset: 288, ManifestVersion: 1,
		WALDirs: []string{"archive_status"}, IdleSessionTimeoutSetting: true, ReservedConnectionsSetting: true},
	{Major: 17, WALPageMagic: 0xD116, ControlVersion: 1700, ControlCRCOffset: 288, ManifestVersion: 2,
		WALDirs: []string{"archive_status", "summaries"}, ExcludedFiles: []string{".DS_Store"},
		IdleSessionTimeoutSetting: true, ReservedConnectionsSetting: true},
	// 18 adds default_char_signedness (one byte) before the 32-byte mock authentication nonce: the CRC moves
	// from 288 to 292 (the next 4-byte boundary after 257+32)
	{Major: 18, WALPageMagic: 0xD118, ControlVersion: 1800, ControlCRCOffset: 292, ManifestVersion: 2,
		WALDirs: []string{"archive_status", "summaries"}, ExcludedFiles: []string{".DS_Store"},
		IdleSessionTimeoutSetting: true, ReservedConnectionsSetting: true},
}

// Supported lists the supported majors, oldest first.
func Supported() []int {
	out := make([]int, len(majors))
	for i, m := range majors {
		out[i] = m.Major
	}
	return out
}

func supportedText() string {
	s := Supported()
	return fmt.Sprintf("%d to %d", s[0], s[len(s)-1])
}

// ForServer returns the row of a server_version_num (150004, 180001, ...).
func ForServer(serverVersionNum int) (Major, error) {
	return ForMajor(serverVersionNum / 10000)
}

// ForMajor returns the row of a major version number.
func ForMajor(major int) (Major, error) {
	i := sort.Search(len(majors), func(i int) bool { return majors[i].Major >= major })
	if i < len(majors) && majors[i].Major == major {
		return majors[i], nil
	}
	return Major{}, fmt.Errorf("PostgreSQL %d is not supported (pgbb supports %s)", major, supportedText())
}

// ForPageMagic returns the row whose WAL page magic is magic.
func ForPageMagic(magic uint16) (Major, error) {
	for _, m := range majors {
		if m.WALPageMagic == magic {
			return m, nil
		}
	}
	return Major{}, fmt.Errorf("WAL page magic 0x%04X of no PostgreSQL version pgbb knows (%s)", magic, supportedText())
}

// ControlCRCOffset returns where the CRC of a pg_control of the given PG_CONTROL_VERSION is stored.
func ControlCRCOffset(controlVersion uint32) (int, error) {
	for _, m := range majors {
		if m.ControlVersion == controlVersion {
			return m.ControlCRCOffset, nil
		}
	}
	var known []string
	for _, m := range majors {
		known = append(known, fmt.Sprint(m.ControlVersion))
	}
	return 0, fmt.Errorf("pg_control version %d is not supported (pgbb knows %s)", controlVersion, strings.Join(dedup(known), ", "))
}

func dedup(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
