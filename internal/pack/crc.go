package pack

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crcUpdate(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }
