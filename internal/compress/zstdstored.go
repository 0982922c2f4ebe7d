package compress

import (
	"encoding/binary"
	"math/bits"
)

// zstdMagic is a zstd frame's Magic_Number (RFC 8878, section 3.1.1).
const zstdMagic = 0xFD2FB528

// zstdMaxBlock is the largest block: Block_Maximum_Size is at most 128 KiB (RFC 8878, section 3.1.1.2.3).
const zstdMaxBlock = 128 << 10

// ZstdStored appends to dst one complete zstd frame holding raw without compression, written by hand
// following RFC 8878: a frame header with Single_Segment_Flag (so no Window_Descriptor: the window is the
// content, which every decoder holds for a small raw), Frame_Content_Size and Content_Checksum_Flag
// (section 3.1.1.1), then Raw_Blocks of at most 128 KiB, the last one flagged Last_Block (3.1.1.2), then the
// low 4 bytes of the content's XXH64 (3.1.1). pgbb-pack uses it for tar headers, padding, archive ends and
// the few small files it holds itself, as XZStored for xz: no encoder runs for them. Any zstd decoder reads
// it; raw should be small (a decoder allocates its length as the window).
func ZstdStored(dst, raw []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, zstdMagic)
	n := uint64(len(raw))
	// Frame_Header_Descriptor: Frame_Content_Size_Flag (bits 7-6), Single_Segment_Flag (5),
	// Content_Checksum_Flag (2), no Dictionary_ID (1-0)
	const single, checksum = 0x20, 0x04
	switch {
	case n < 256:
		dst = append(dst, 0<<6|single|checksum, byte(n))
	case n < 256+1<<16:
		dst = append(dst, 1<<6|single|checksum)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(n-256)) // the 2-byte field is offset by 256
	case n < 1<<32:
		dst = append(dst, 2<<6|single|checksum)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	default:
		dst = append(dst, 3<<6|single|checksum)
		dst = binary.LittleEndian.AppendUint64(dst, n)
	}
	// Block_Header, 3 bytes little-endian: Last_Block (bit 0), Block_Type 0 = Raw_Block (bits 1-2),
	// Block_Size (bits 3-23); an empty content is one empty last block
	off := 0
	for {
		size := min(zstdMaxBlock, len(raw)-off)
		bh := uint32(size) << 3
		last := off+size == len(raw)
		if last {
			bh |= 1
		}
		dst = append(dst, byte(bh), byte(bh>>8), byte(bh>>16))
		dst = append(dst, raw[off:off+size]...)
		off += size
		if last {
			break
		}
	}
	return binary.LittleEndian.AppendUint32(dst, uint32(xxh64(raw)))
}

// XXH64 primes (the xxHash specification, xxhash_spec.md, "XXH64 algorithm description").
const (
	xxPrime1 uint64 = 11400714785074694791
	xxPrime2 uint64 = 14029467366897019727
	xxPrime3 uint64 = 1609587929392839161
	xxPrime4 uint64 = 9650029242287828579
	xxPrime5 uint64 = 2870177450012600261
)

// xxh64 is XXH64 with seed 0, the hash of zstd's Content_Checksum, written from the xxHash specification.
func xxh64(b []byte) uint64 {
	round := func(acc, lane uint64) uint64 { return bits.RotateLeft64(acc+lane*xxPrime2, 31) * xxPrime1 }
	n := uint64(len(b))
	var h uint64
	if len(b) >= 32 {
		p1, p2 := xxPrime1, xxPrime2 // variables: the sums wrap, as the specification's unsigned arithmetic does
		v1, v2, v3, v4 := p1+p2, p2, uint64(0), -p1
		for ; len(b) >= 32; b = b[32:] {
			v1 = round(v1, binary.LittleEndian.Uint64(b))
			v2 = round(v2, binary.LittleEndian.Uint64(b[8:]))
			v3 = round(v3, binary.LittleEndian.Uint64(b[16:]))
			v4 = round(v4, binary.LittleEndian.Uint64(b[24:]))
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		for _, v := range []uint64{v1, v2, v3, v4} {
			h = (h^round(0, v))*xxPrime1 + xxPrime4
		}
	} else {
		h = xxPrime5
	}
	h += n
	for ; len(b) >= 8; b = b[8:] {
		h ^= round(0, binary.LittleEndian.Uint64(b))
		h = bits.RotateLeft64(h, 27)*xxPrime1 + xxPrime4
	}
	if len(b) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32(b)) * xxPrime1
		h = bits.RotateLeft64(h, 23)*xxPrime2 + xxPrime3
		b = b[4:]
	}
	for _, c := range b {
		h ^= uint64(c) * xxPrime5
		h = bits.RotateLeft64(h, 11) * xxPrime1
	}
	h ^= h >> 33
	h *= xxPrime2
	h ^= h >> 29
	h *= xxPrime3
	h ^= h >> 32
	return h
}
