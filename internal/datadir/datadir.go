// Package datadir holds the rules of what a base backup copies from a data directory: PostgreSQL's exclusion
// table, relation file names, temporary and unlogged relation detection. It imports only the standard
// library.
//
// The tables mirror src/backend/backup/basebackup.c of PostgreSQL 15 (src/backend/replication/ in 13 to
// 15), with what differs between majors in internal/pgversion (excludeDirContents, excludeFiles and
// sendDir) and the relation file name rules of src/backend/storage/file/reinit.c
// (parse_filename_for_nontemp_relation) and src/backend/storage/file/fd.c (looks_like_temp_rel_name).
package datadir

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/pgversion"
)

// Decision is what the backup does with one directory entry.
type Decision int

const (
	// Copy copies the entry (a file's bytes, or a directory and what is inside it).
	Copy Decision = iota
	// EmptyDir creates the directory but copies nothing inside it.
	EmptyDir
	// Skip leaves the entry out.
	Skip
	// TablespaceLink marks pg_tblspc/<oid>: a link whose target's version directory is copied.
	TablespaceLink
)

// excludedDirContents are directories created empty in the backup, at any depth, as basebackup.c does.
var excludedDirContents = map[string]string{
	// extensions like pg_stat_statements keep temporary data here
	"pg_stat_tmp": "temporary statistics files",
	// slots are not useful in a restored cluster, even one that becomes a primary
	"pg_replslot": "replication slots",
	// removed at startup, see dsm_cleanup_for_mmap()
	"pg_dynshmem": "dynamic shared memory, removed at startup (dsm_cleanup_for_mmap)",
	// removed at startup, see AsyncShmemInit()
	"pg_notify": "LISTEN/NOTIFY queue, removed at startup (AsyncShmemInit)",
	// old contents are loaded for debugging only, see SerialInit()
	"pg_serial": "serializable transaction state, not needed (SerialInit)",
	// removed at startup, see DeleteAllExportedSnapshotFiles()
	"pg_snapshots": "exported snapshots, removed at startup (DeleteAllExportedSnapshotFiles)",
	// zeroed at startup, see StartupSUBTRANS()
	"pg_subtrans": "subtransaction state, zeroed at startup (StartupSUBTRANS)",
}

type excludedFile struct {
	name   string
	prefix bool
	reason string
}

// excludedFiles are left out at any depth, as basebackup.c's excludeFiles.
var excludedFiles = []excludedFile{
	{"postgresql.auto.conf.tmp", false, "temporary file of ALTER SYSTEM"},
	{"current_logfiles.tmp", false, "temporary file of the logging collector"},
	// rebuilt at startup; the prefix also catches its temporary files
	{"pg_internal.init", true, "relation cache init file, rebuilt at startup"},
	// a label or map found here belongs to another backup; ours comes from pg_backup_stop
	{"backup_label", false, "belongs to another backup; pgbb writes the one pg_backup_stop returns"},
	{"tablespace_map", false, "belongs to another backup; pgbb writes the one pg_backup_stop returns"},
	// belongs to the backup this server was restored from
	{"backup_manifest", false, "belongs to the backup this server was restored from"},
	{"postmaster.pid", false, "lock file of the running server"},
	{"postmaster.opts", false, "options of the running server"},
}

// TempFilePrefix is PG_TEMP_FILE_PREFIX: files and directories starting with it are left out.
const TempFilePrefix = "pgsql_tmp"

// ControlFile is copied last by pgbb-xlog, never by the listing.
const ControlFile = "global/pg_control"

// Rules decides for one server version.
type Rules struct {
	// TablespaceVersionDir is TABLESPACE_VERSION_DIRECTORY, "PG_<major>_<catalog version>".
	TablespaceVersionDir string
	// Major is the server's row of the version table: what differs between majors.
	Major pgversion.Major
	// StatsTempDir is the stats_temp_directory of a 13 or 14 server relative to the data directory, whose
	// contents are left out like pg_stat_tmp's; "" when it is outside or the major has no such setting.
	StatsTempDir string
}

// NewRules returns the rules for a server major, its catalog version number (from pg_control) and, for 13
// and 14, its stats_temp_directory relative to the data directory ("" if outside it).
func NewRules(major pgversion.Major, catalogVersion uint32, statsTempDir string) Rules {
	return Rules{TablespaceVersionDir: fmt.Sprintf("PG_%d_%d", major.Major, catalogVersion), Major: major, StatsTempDir: statsTempDir}
}

// WALDirs are the directories below pg_wal that the backup holds, empty (pg_wal/archive_status, and
// pg_wal/summaries from 17).
func (r Rules) WALDirs() []string { return r.Major.WALDirPaths() }

var digits = regexp.MustCompile(`^[0-9]+$`)

// IsDatabaseDir reports whether dir (relative to the data directory) holds a database's relation files:
// base/<oid> or pg_tblspc/<oid>/<version dir>/<oid>.
func (r Rules) IsDatabaseDir(dir string) bool {
	p := strings.Split(dir, "/")
	switch {
	case len(p) == 2 && p[0] == "base":
		return digits.MatchString(p[1])
	case len(p) == 4 && p[0] == "pg_tblspc":
		return digits.MatchString(p[1]) && p[2] == r.TablespaceVersionDir && digits.MatchString(p[3])
	}
	return false
}

// Classify decides about entry name in directory dir ("" for the top). siblings holds every name in dir;
// it is used to find init forks. The reason says why an entry is skipped or emptied.
func (r Rules) Classify(dir, name string, isDir bool, siblings map[string]bool) (Decision, string) {
	path := name
	if dir != "" {
		path = dir + "/" + name
	}
	if strings.HasPrefix(name, TempFilePrefix) {
		return Skip, "temporary file (" + TempFilePrefix + "*)"
	}
	for _, f := range excludedFiles {
		if name == f.name || (f.prefix && strings.HasPrefix(name, f.name)) {
			return Skip, f.reason
		}
	}
	for _, f := range r.Major.ExcludedFiles {
		if name == f {
			return Skip, fmt.Sprintf("left out by PostgreSQL %d's base backups", r.Major.Major)
		}
	}
	if path == ControlFile {
		return Skip, "copied last by pgbb-xlog"
	}
	if dir == "" && name == "pg_wal" {
		return EmptyDir, "WAL is copied by pgbb-xlog; " + strings.Join(r.WALDirs(), " and ") + " are created empty"
	}
	if isDir && r.StatsTempDir != "" && path == r.StatsTempDir {
		return EmptyDir, "stats_temp_directory, temporary statistics files"
	}
	if dir == "pg_tblspc" {
		if !digits.MatchString(name) {
			return Skip, "not a tablespace link"
		}
		return TablespaceLink, ""
	}
	if isDir {
		if why, ok := excludedDirContents[name]; ok {
			return EmptyDir, why
		}
	}
	if d := strings.Split(dir, "/"); len(d) == 2 && d[0] == "pg_tblspc" && name != r.TablespaceVersionDir {
		return Skip, "belongs to another server version"
	}
	if !isDir && r.IsDatabaseDir(dir) {
		if LooksLikeTempRelation(name) {
			return Skip, "temporary relation"
		}
		if rel, ok := ParseRelationFileName(name); ok && rel.Fork != "init" && siblings[rel.Number+"_init"] {
			return Skip, "unlogged relation (only its init fork is copied)"
		}
	}
	return Copy, ""
}

// noChecksumFiles are files in relation directories without page checksums (basebackup.c's
// noChecksumFiles of PostgreSQL 13 to 16; pg_internal.init by prefix).
var noChecksumFiles = map[string]bool{"pg_control": true, "pg_filenode.map": true, "PG_VERSION": true}

// HasPageChecksums reports whether the file at path (relative to the data directory) is made of data pages
// that carry checksums when the cluster has them: files under global/, base/ or a tablespace's version
// directory, except pg_control, pg_filenode.map, PG_VERSION and pg_internal.init* (basebackup.c,
// is_checksummed_file).
func HasPageChecksums(path string) bool {
	dir, name := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, name = path[:i], path[i+1:]
	}
	if noChecksumFiles[name] || strings.HasPrefix(name, "pg_internal.init") || strings.HasPrefix(name, TempFilePrefix) {
		return false
	}
	return dir == "global" || checksummedDir.MatchString(dir)
}

var checksummedDir = regexp.MustCompile(`^(base/[0-9]+|pg_tblspc/[0-9]+/PG_[0-9]+_[0-9]+/[0-9]+)$`)

// SegmentNumber returns the segment number of a relation file name (the ".N" suffix), 0 without one.
func SegmentNumber(name string) uint64 {
	if rel, ok := ParseRelationFileName(name); ok && rel.Segment != "" {
		n, err := strconv.ParseUint(rel.Segment, 10, 32)
		if err == nil {
			return n
		}
	}
	return 0
}

// RelationFile is a parsed relation file name: <number>[_<fork>][.<segment>].
type RelationFile struct {
	Number  string
	Fork    string // "", "fsm", "vm" or "init"
	Segment string // "" for the first segment
}

var relationFileName = regexp.MustCompile(`^([0-9]+)(?:_(fsm|vm|init))?(?:\.([0-9]+))?$`)

// ParseRelationFileName parses the file name of a permanent relation (parse_filename_for_nontemp_relation).
func ParseRelationFileName(name string) (RelationFile, bool) {
	m := relationFileName.FindStringSubmatch(name)
	if m == nil {
		return RelationFile{}, false
	}
	return RelationFile{Number: m[1], Fork: m[2], Segment: m[3]}, true
}

var tempRelationName = regexp.MustCompile(`^t[0-9]+_[0-9]+(?:_(?:fsm|vm|init))?(?:\.[0-9]+)?$`)

// LooksLikeTempRelation reports whether name is a temporary relation's file, t<backend>_<number>…
// (looks_like_temp_rel_name).
func LooksLikeTempRelation(name string) bool { return tempRelationName.MatchString(name) }

// CheckWorkItemPath refuses the paths a work item may not write, whoever writes it (pgbb-pack, or a job
// writing into the target itself): backup_label, tablespace_map, backup_manifest and global/pg_control
// (pgbb-xlog's records and pgbb-pack provide them), names starting ".pgbb" (pgbb-pack's own), and anything
// inside pg_wal but the given empty directories (pgbb-xlog copies the WAL).
func CheckWorkItemPath(path string, walDirs []string) error {
	switch path {
	case "backup_label", "tablespace_map", "backup_manifest", ControlFile:
		return fmt.Errorf("work item writes %q, which only pgbb-xlog's records or pgbb-pack provide", path)
	}
	if strings.HasPrefix(path, ".pgbb") {
		return fmt.Errorf("work item writes %q, a name pgbb-pack reserves", path)
	}
	if strings.HasPrefix(path, "pg_wal/") && !slices.Contains(walDirs, path) {
		return fmt.Errorf("work item writes %q inside pg_wal", path)
	}
	return nil
}

// CheckPath enforces the rule for a path relative to the data directory (docs/worklist.md, and what
// backup_manifest paths must be): relative, non-empty, no empty, "." or ".."
// component, no trailing slash.
func CheckPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("absolute path %q", p)
	}
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "":
			return fmt.Errorf("empty component in path %q", p)
		case ".", "..":
			return fmt.Errorf("%q component in path %q", c, p)
		}
		if strings.IndexByte(c, 0) >= 0 {
			return fmt.Errorf("NUL byte in path %q", p)
		}
	}
	return nil
}
