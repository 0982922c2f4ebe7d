// Package ratelimit holds a run's limit on the bytes it reads from the server (docs/toolbox.md, section 5):
// the rate's units, one token bucket, the socket on which pgbb-xlog serves the bucket to its children, the
// reader that pays for every read of a server connection, and the file whose rate is followed while the
// run goes on.
package ratelimit

import (
	"fmt"
	"strconv"
	"strings"
)

// The bounds pg_basebackup accepts for --max-rate, in kB/s (MAX_RATE_LOWER and MAX_RATE_UPPER of
// src/include/backup/basebackup.h).
const (
	lowerKB = 32
	upperKB = 1024 * 1024
)

// Parse reads a rate as pg_basebackup's --max-rate does (src/bin/pg_basebackup/pg_basebackup.c,
// parse_max_rate): a decimal number of kilobytes (1024 bytes) per second, optionally followed by "k" (no
// effect) or "M" (times 1024), white space allowed around the suffix, from 32 kB/s to 1024 MB/s. Unlike
// pg_basebackup it takes 0, which means unlimited. It returns bytes per second.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	end := 0
	for end < len(t) && (t[end] >= '0' && t[end] <= '9' || t[end] == '.') {
		end++
	}
	num, unit := t[:end], strings.TrimSpace(t[end:])
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("transfer rate %q is not a valid value (kB/s, or with a suffix k or M, as 500k or 10M)", s)
	}
	switch unit {
	case "", "k":
	case "M":
		v *= 1024
	default:
		return 0, fmt.Errorf("transfer rate %q has an invalid unit %q (k or M)", s, unit)
	}
	if v == 0 {
		return 0, nil
	}
	if v < lowerKB || v > upperKB {
		return 0, fmt.Errorf("transfer rate %q is out of range (32 kB/s to 1024 MB/s, or 0 for no limit)", s)
	}
	return int64(v * 1024), nil
}

// Format writes a rate in bytes per second for messages: "10.0 MB/s", "512 kB/s", "unlimited".
func Format(r int64) string {
	switch {
	case r <= 0:
		return "unlimited"
	case r >= 1024*1024:
		return fmt.Sprintf("%.1f MB/s", float64(r)/(1024*1024))
	default:
		return fmt.Sprintf("%.0f kB/s", float64(r)/1024)
	}
}
