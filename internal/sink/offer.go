package sink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Offer is the one message a sink's reader sends a job, before it reads the job's stream
// (docs/chunk-stream.md, "The sink's offer"): whether the job writes its file ranges into the target
// itself (docs/direct-write.md) and beneath which directories.
type Offer struct {
	Direct bool
	NoSync bool // the backup is not synced (-N): no early writeback either
	Resume bool // the target holds an earlier run's bytes: compare before fetching (docs/resume.md); only with Direct
	// Reference says the job compares with a reference backup before fetching (docs/incremental.md,
	// section 5); only with Direct, never with Resume. Old and OldTablespaces are then its directory and
	// its tablespace directories by oid, open read-only (O_PATH).
	Reference bool
	DirMode   uint32 // the data directory's mode, 0700 or 0750
	// Dest is the target directory and Tablespaces each mapped tablespace directory by oid, open (O_PATH)
	// when Direct. The sender keeps its own descriptors; the receiver owns the ones it got.
	Dest           *os.File
	Tablespaces    map[uint32]*os.File
	Old            *os.File
	OldTablespaces map[uint32]*os.File
}

// MaxOfferTablespaces bounds the tablespaces of a direct-write offer (the descriptors of one message).
const MaxOfferTablespaces = 250

var offerMagic = [8]byte{'P', 'G', 'B', 'B', 'O', 'F', 'R', '1'}

const (
	offerDirect    = 1 << 0
	offerNoSync    = 1 << 1
	offerResume    = 1 << 2
	offerReference = 1 << 3
)

// SendOffer writes o to a job's connection in one message, with the descriptors when o.Direct.
func SendOffer(c net.Conn, o Offer) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("sink: an offer needs a Unix connection")
	}
	if len(o.Tablespaces)+len(o.OldTablespaces) > MaxOfferTablespaces {
		return fmt.Errorf("sink: %d tablespaces in an offer, at most %d", len(o.Tablespaces)+len(o.OldTablespaces), MaxOfferTablespaces)
	}
	msg := append([]byte(nil), offerMagic[:]...)
	var flags uint32
	if o.Direct {
		flags |= offerDirect
	}
	if o.NoSync {
		flags |= offerNoSync
	}
	if o.Resume {
		if !o.Direct {
			return errors.New("sink: a resume offer without direct writes")
		}
		flags |= offerResume
	}
	if o.Reference {
		if !o.Direct || o.Resume || o.Old == nil {
			return errors.New("sink: a reference offer needs direct writes and the reference, and no resume")
		}
		flags |= offerReference
	} else if o.Old != nil || len(o.OldTablespaces) > 0 {
		return errors.New("sink: reference descriptors without the reference flag")
	}
	msg = binary.BigEndian.AppendUint32(msg, flags)
	msg = binary.BigEndian.AppendUint32(msg, o.DirMode)
	var oids []uint32
	var fds []int
	if o.Direct {
		if o.Dest == nil {
			return errors.New("sink: a direct-write offer without a target")
		}
		fds = append(fds, int(o.Dest.Fd()))
		for oid, f := range o.Tablespaces {
			oids = append(oids, oid)
			fds = append(fds, int(f.Fd()))
		}
	}
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(oids)))
	for _, oid := range oids {
		msg = binary.BigEndian.AppendUint32(msg, oid)
	}
	if o.Reference {
		fds = append(fds, int(o.Old.Fd()))
		msg = binary.BigEndian.AppendUint32(msg, uint32(len(o.OldTablespaces)))
		for oid, f := range o.OldTablespaces {
			msg = binary.BigEndian.AppendUint32(msg, oid)
			fds = append(fds, int(f.Fd()))
		}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	n, oobn, err := uc.WriteMsgUnix(msg, oob, nil)
	if err != nil {
		return fmt.Errorf("send the offer: %w", err)
	}
	if n != len(msg) || oobn != len(oob) {
		return errors.New("send the offer: short write")
	}
	return nil
}

// ReadOffer reads the offer from the sink's reader, waiting until it comes (pgbb-pack sends it once it
// has the backup's start) or ctx ends. A connection closed before it means the sink has ended.
func ReadOffer(ctx context.Context, c *net.UnixConn) (Offer, error) {
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(aLongTimeAgo) })
	defer stop()
	buf := make([]byte, 24+4*MaxOfferTablespaces)
	oob := make([]byte, syscall.CmsgSpace(4*(MaxOfferTablespaces+2)))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	var fds []int
	if err == nil && oobn > 0 {
		fds, err = parseRights(oob[:oobn])
	}
	o, perr := parseOffer(buf[:n], fds, c, err)
	if perr != nil {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		if ctx.Err() != nil {
			return Offer{}, ctx.Err()
		}
		return Offer{}, perr
	}
	return o, nil
}

var aLongTimeAgo = time.Unix(1, 0)

func parseRights(oob []byte) ([]int, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		f, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			return nil, err
		}
		fds = append(fds, f...)
	}
	return fds, nil
}

// parseOffer decodes a message whose first read returned b (and readErr); the rest of a message cut
// across reads is read from c.
func parseOffer(b []byte, fds []int, c *net.UnixConn, readErr error) (Offer, error) {
	if readErr != nil && len(b) == 0 {
		if errors.Is(readErr, io.EOF) {
			return Offer{}, errors.New("the sink closed the connection before its offer: it has ended")
		}
		return Offer{}, fmt.Errorf("read the sink's offer: %w", readErr)
	}
	need := func(n int) error {
		for len(b) < n {
			more := make([]byte, n-len(b))
			m, err := c.Read(more)
			b = append(b, more[:m]...)
			if err != nil && len(b) < n {
				return fmt.Errorf("read the sink's offer: %w", err)
			}
		}
		return nil
	}
	if err := need(20); err != nil {
		return Offer{}, err
	}
	if [8]byte(b[:8]) != offerMagic {
		return Offer{}, errors.New("the sink sent no offer: pgbb-pack and pgbb-fetch are of different versions")
	}
	flags := binary.BigEndian.Uint32(b[8:])
	o := Offer{Direct: flags&offerDirect != 0, NoSync: flags&offerNoSync != 0, Resume: flags&offerResume != 0,
		Reference: flags&offerReference != 0, DirMode: binary.BigEndian.Uint32(b[12:])}
	count := binary.BigEndian.Uint32(b[16:])
	switch {
	case flags&^(offerDirect|offerNoSync|offerResume|offerReference) != 0:
		return Offer{}, fmt.Errorf("the sink's offer has unknown flags %#x", flags)
	case o.Resume && !o.Direct:
		return Offer{}, errors.New("the sink's offer says resume without direct writes")
	case o.Reference && (!o.Direct || o.Resume):
		return Offer{}, errors.New("the sink's offer says reference without direct writes, or with resume")
	case o.DirMode != 0o700 && o.DirMode != 0o750:
		return Offer{}, fmt.Errorf("the sink's offer has data directory mode %04o", o.DirMode)
	case count > MaxOfferTablespaces:
		return Offer{}, fmt.Errorf("the sink's offer names %d tablespaces", count)
	}
	if err := need(20 + 4*int(count)); err != nil {
		return Offer{}, err
	}
	size, oldCount := 20+4*int(count), 0
	if o.Reference {
		if err := need(size + 4); err != nil {
			return Offer{}, err
		}
		oldCount = int(binary.BigEndian.Uint32(b[size:]))
		if int(count)+oldCount > MaxOfferTablespaces {
			return Offer{}, fmt.Errorf("the sink's offer names %d tablespaces", int(count)+oldCount)
		}
		size += 4 + 4*oldCount
		if err := need(size); err != nil {
			return Offer{}, err
		}
	}
	if len(b) != size {
		return Offer{}, errors.New("the sink's offer is followed by other bytes")
	}
	want := 0
	if o.Direct {
		want = 1 + int(count)
	} else if count != 0 {
		return Offer{}, errors.New("the sink's offer names tablespaces without direct writes")
	}
	if o.Reference {
		want += 1 + oldCount
	}
	if len(fds) != want {
		return Offer{}, fmt.Errorf("the sink's offer came with %d descriptors, want %d", len(fds), want)
	}
	seen := map[uint32]bool{}
	for i := 0; i < int(count); i++ {
		oid := binary.BigEndian.Uint32(b[20+4*i:])
		if seen[oid] {
			return Offer{}, fmt.Errorf("the sink's offer names tablespace %d twice", oid)
		}
		seen[oid] = true
	}
	oldOIDs := make([]uint32, oldCount)
	oldSeen := map[uint32]bool{}
	for i := range oldOIDs {
		oldOIDs[i] = binary.BigEndian.Uint32(b[24+4*int(count)+4*i:])
		if oldSeen[oldOIDs[i]] {
			return Offer{}, fmt.Errorf("the sink's offer names reference tablespace %d twice", oldOIDs[i])
		}
		oldSeen[oldOIDs[i]] = true
	}
	// the descriptors become Files only once the offer is whole: the caller closes them on any error
	if o.Direct {
		o.Dest = os.NewFile(uintptr(fds[0]), "DEST")
		o.Tablespaces = map[uint32]*os.File{}
		for i := 0; i < int(count); i++ {
			oid := binary.BigEndian.Uint32(b[20+4*i:])
			o.Tablespaces[oid] = os.NewFile(uintptr(fds[1+i]), fmt.Sprintf("tablespace %d", oid))
		}
	}
	if o.Reference {
		at := 1 + int(count)
		o.Old = os.NewFile(uintptr(fds[at]), "reference")
		o.OldTablespaces = map[uint32]*os.File{}
		for i, oid := range oldOIDs {
			o.OldTablespaces[oid] = os.NewFile(uintptr(fds[at+1+i]), fmt.Sprintf("reference tablespace %d", oid))
		}
	}
	return o, nil
}

// Close closes the descriptors the offer holds.
func (o Offer) Close() {
	if o.Dest != nil {
		o.Dest.Close()
	}
	for _, f := range o.Tablespaces {
		f.Close()
	}
	if o.Old != nil {
		o.Old.Close()
	}
	for _, f := range o.OldTablespaces {
		f.Close()
	}
}
