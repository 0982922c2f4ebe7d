package compress

import (
	"encoding/binary"
	"hash/crc32"
)

// XZStored appends to dst one complete xz stream holding raw without compression: LZMA2 "uncompressed"
// chunks in a single block with a CRC32 check, written by hand following the .xz file format (tukaani.org
// xz-file-format 1.2.0, sections 2 and 3) and the LZMA2 chunk headers. pgbb-pack uses it for tar headers,
// padding and archive ends, which are a few hundred bytes: running an encoder for each would cost more CPU
// than the bytes are worth. Any xz decoder reads it.
func XZStored(dst, raw []byte) []byte {
	le32 := func(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
	// stream header: magic, flags (check type 1 = CRC32), CRC32 of the flags
	flags := []byte{0x00, 0x01}
	dst = append(dst, 0xFD, '7', 'z', 'X', 'Z', 0x00)
	dst = append(dst, flags...)
	dst = le32(dst, crc32.ChecksumIEEE(flags))
	// block header: size byte ((12/4)-1), block flags (one filter, no sizes), LZMA2 filter id 0x21 with one
	// property byte (dictionary 4 KiB: nothing is looked up), padding to 8 bytes, CRC32
	bh := []byte{0x02, 0x00, 0x21, 0x01, 0x00, 0x00, 0x00, 0x00}
	dst = append(dst, bh...)
	dst = le32(dst, crc32.ChecksumIEEE(bh))
	// LZMA2 data: uncompressed chunks of at most 64 KiB (control 1 resets the dictionary, 2 does not),
	// then the end marker
	data := 0
	for off := 0; off < len(raw); off += 1 << 16 {
		n := min(1<<16, len(raw)-off)
		ctl := byte(0x02)
		if off == 0 {
			ctl = 0x01
		}
		dst = append(dst, ctl, byte((n-1)>>8), byte(n-1))
		dst = append(dst, raw[off:off+n]...)
		data += 3 + n
	}
	dst = append(dst, 0x00)
	data++
	for i := data; i%4 != 0; i++ {
		dst = append(dst, 0x00)
	}
	dst = le32(dst, crc32.ChecksumIEEE(raw))
	// index: indicator, one record (unpadded size, uncompressed size), padding, CRC32
	unpadded := uint64(12 + data + 4)
	idx := []byte{0x00}
	idx = binary.AppendUvarint(idx, 1)
	idx = binary.AppendUvarint(idx, unpadded)
	idx = binary.AppendUvarint(idx, uint64(len(raw)))
	for len(idx)%4 != 0 {
		idx = append(idx, 0x00)
	}
	dst = append(dst, idx...)
	dst = le32(dst, crc32.ChecksumIEEE(idx))
	// stream footer: CRC32 of (backward size, flags), backward size, flags, magic
	foot := le32(nil, uint32(len(idx)+4)/4-1)
	foot = append(foot, flags...)
	dst = le32(dst, crc32.ChecksumIEEE(foot))
	dst = append(dst, foot...)
	return append(dst, 'Y', 'Z')
}
