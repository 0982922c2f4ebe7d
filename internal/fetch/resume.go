package fetch

import (
	"github.com/pgbb/pgbb/internal/resume"
	"github.com/pgbb/pgbb/internal/server"
)

// resumeGroupBytes bounds the pieces compared at once: the target's bytes of a group are held in memory.
const resumeGroupBytes = 32 << 20

// compareRanges copies pieces into a target that holds an earlier run's bytes (docs/resume.md, "Resume"),
// or from a reference backup (docs/incremental.md, section 5): per group of pieces, one statement asks
// the server for the SHA-256 of every page, read after this backup's start; a page whose stored bytes
// have the same digest is proved (and kept in the target, or taken from the reference), every other page
// is read in a second statement. Each piece then gets its W record as if fetched whole, and each item its
// outcome after its last piece. ranges and owner are as copyItems built them.
func (f *fetcher) compareRanges(ranges []server.Range, owner []*itemCopy) error {
	for start := 0; start < len(ranges); {
		end, bytes := start+1, ranges[start].Length
		for end < len(ranges) && bytes+ranges[end].Length <= resumeGroupBytes {
			bytes += ranges[end].Length
			end++
		}
		if err := f.compareGroup(ranges[start:end], owner[start:end]); err != nil {
			return err
		}
		for i := start; i < end; i++ {
			if i+1 == len(ranges) || owner[i+1] != owner[i] {
				if err := f.outcome(owner[i]); err != nil {
					return err
				}
			}
		}
		start = end
	}
	return nil
}

// groupPiece is one piece of a group being compared.
type groupPiece struct {
	data    []byte // the piece's bytes: the target's (or the reference's), then the refetched pages laid over them
	missing bool
	need    []bool // sub-blocks fetched (resume.SubBlockSize); nil when the piece is fetched whole
}

// dirty returns the pages to write into a target that holds the stored bytes (resume): those with a
// sub-block fetched; nil when the piece is fetched whole.
func (p *groupPiece) dirty() []bool {
	if p.need == nil {
		return nil
	}
	perPage := resume.PageSize / resume.SubBlockSize
	d := make([]bool, (len(p.need)+perPage-1)/perPage)
	for u, n := range p.need {
		d[u/perPage] = d[u/perPage] || n
	}
	return d
}

// storedBytes is where the bytes compared with the server's are: the target (resume) or the reference.
type storedBytes interface {
	Size(path string) (int64, error)
	ReadAt(path string, off int64, buf []byte) (int, error)
}

func (f *fetcher) compareGroup(rs []server.Range, owner []*itemCopy) error {
	var stored storedBytes = f.direct
	if f.old != nil {
		stored = f.old
	}
	pieces := make([]groupPiece, len(rs))
	// the pieces the server digests: ASCII paths, items still open, and stored bytes in the target to
	// compare (a piece the target holds nothing of is fetched whole: digests would only cost the server)
	var asked []server.Range
	var askedIdx []int
	sizes := map[string]int64{}
	for i, r := range rs {
		if r.Length == 0 || owner[i].ended || !server.ASCIIPath(r.Path) {
			continue
		}
		size, ok := sizes[r.Path]
		if !ok {
			var err error
			if size, err = stored.Size(r.Path); err != nil {
				return err
			}
			sizes[r.Path] = size
		}
		if size > r.Offset {
			asked = append(asked, r)
			askedIdx = append(askedIdx, i)
		}
	}
	var digests []server.PageDigest
	if len(asked) > 0 {
		var err error
		if digests, err = f.conn.PageDigests(f.ctx, asked); err != nil {
			return err
		}
	}
	// what is read in the last statement: runs of sub-blocks that were not proved, and whole pieces
	var reads []server.Range
	type into struct{ piece, at int }
	var dst []into
	digested := make([]bool, len(rs))
	// the pages that differ but are whole in the stored bytes are compared again per sub-block
	var subAsk []server.Range
	type subOf struct{ piece, page int }
	var subWhere []subOf
	for j, i := range askedIdx {
		d, r := digests[j], rs[i]
		digested[i] = true
		if d.Missing {
			pieces[i].missing = true
			continue
		}
		buf := make([]byte, d.Length)
		n, err := stored.ReadAt(r.Path, r.Offset, buf)
		if err != nil {
			return err
		}
		proved, err := resume.ProvedPages(int(d.Length), d.Digests, buf[:n])
		if err != nil {
			return err
		}
		p := &pieces[i]
		p.data = buf
		p.need = make([]bool, (len(buf)+resume.SubBlockSize-1)/resume.SubBlockSize)
		for k, ok := range proved {
			if ok {
				continue
			}
			lo, hi := k*resume.PageSize, min((k+1)*resume.PageSize, len(buf))
			for u := lo / resume.SubBlockSize; u*resume.SubBlockSize < hi; u++ {
				p.need[u] = true
			}
			if hi <= n && hi-lo > resume.SubBlockSize {
				subAsk = append(subAsk, server.Range{Path: r.Path, Offset: r.Offset + int64(lo), Length: int64(hi - lo)})
				subWhere = append(subWhere, subOf{i, k})
			}
		}
	}
	if len(subAsk) > 0 {
		subs, err := f.conn.UnitDigests(f.ctx, subAsk, resume.SubBlockSize, resume.SubDigestSize)
		if err != nil {
			return err
		}
		for j, sd := range subs {
			p, k := &pieces[subWhere[j].piece], subWhere[j].page
			lo := k * resume.PageSize
			if sd.Missing || sd.Length != subAsk[j].Length {
				continue // the file changed since the page digests: the page is fetched whole
			}
			proved, err := resume.ProvedUnits(resume.SubBlockSize, resume.SubDigestSize, int(sd.Length), sd.Digests, p.data[lo:lo+int(sd.Length)])
			if err != nil {
				return err
			}
			// all equal by now leaves the page unwritten: it changed back, or its first read was torn
			for u, ok := range proved {
				p.need[lo/resume.SubBlockSize+u] = !ok
			}
		}
	}
	for _, i := range askedIdx {
		p, r := &pieces[i], rs[i]
		for _, run := range runs(p.need) {
			lo, hi := int64(run[0]*resume.SubBlockSize), min(int64(run[1]*resume.SubBlockSize), int64(len(p.data)))
			reads = append(reads, server.Range{Path: r.Path, Offset: r.Offset + lo, Length: hi - lo})
			dst = append(dst, into{i, int(lo)})
			f.stats.Refetched++
		}
	}
	for i, r := range rs {
		if !digested[i] && !owner[i].ended {
			reads = append(reads, r)
			dst = append(dst, into{i, -1})
		}
	}
	if len(reads) > 0 {
		err := f.conn.ReadRanges(f.ctx, reads, func(j int, data []byte, missing bool) error {
			p := &pieces[dst[j].piece]
			f.fetched(reads[j].Path, len(data))
			if dst[j].at < 0 {
				p.data, p.missing = append([]byte(nil), data...), missing
				return nil
			}
			if p.data == nil || dst[j].at > len(p.data) {
				return nil // the piece was cut at an earlier run that came back short
			}
			at := dst[j].at
			copy(p.data[at:], data)
			if missing || int64(len(data)) < reads[j].Length {
				// the file shrank between the two statements: the piece ends where the bytes do
				p.data = p.data[:at+len(data)]
				p.missing = missing && at == 0
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i, r := range rs {
		ic := owner[i]
		if ic.ended {
			continue
		}
		p := &pieces[i]
		if r.Length == 0 && !digested[i] && p.data == nil && !p.missing {
			p.data = []byte{} // an empty file that is still there
		}
		var write []bool
		if f.old == nil {
			write = p.dirty() // else the target is new: every page is written, those from the reference too
		}
		if err := f.piece(ic, r, p.data, p.missing, write); err != nil {
			return err
		}
		kept := 0
		for u, n := range p.need {
			// the proved sub-blocks of what was stored (a piece cut short keeps only its first bytes)
			if lo := u * resume.SubBlockSize; !n && lo < len(p.data) {
				kept += min(lo+resume.SubBlockSize, len(p.data)) - lo
			}
		}
		if kept > 0 {
			f.reused(r.Path, kept)
		}
	}
	return nil
}
