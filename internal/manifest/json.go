package manifest

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A small strict JSON reader for Parse. encoding/json would do the syntax, but it silently turns invalid
// UTF-8 and lone surrogate escapes into U+FFFD (a path could change without an error), forgets the order
// and duplicates of keys, and knows no byte offsets to name a line with.

type jsonKind int

const (
	jsonObject jsonKind = iota
	jsonArray
	jsonString
	jsonNumber
	jsonLiteral // true, false, null: valid JSON, never valid in a manifest
)

type jsonValue struct {
	kind    jsonKind
	off     int          // offset of the value's first byte
	text    string       // a string's decoded text; a number's or literal's source text
	members []jsonMember // an object's, in order, duplicates kept
	elems   []jsonValue  // an array's
}

type jsonMember struct {
	key    string
	keyOff int
	value  jsonValue
}

type jsonParser struct {
	b   []byte
	pos int
}

// line returns the 1-based line number of byte offset off.
func (p *jsonParser) line(off int) int {
	return bytes.Count(p.b[:min(off, len(p.b))], []byte("\n")) + 1
}

func (p *jsonParser) errorAt(off int, format string, a ...any) error {
	return fmt.Errorf("line %d: %s", p.line(off), fmt.Sprintf(format, a...))
}

// document parses the whole input as one JSON value with only whitespace around it.
func (p *jsonParser) document() (*jsonValue, error) {
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos != len(p.b) {
		return nil, p.errorAt(p.pos, "unexpected %s after the end of the manifest", p.describe())
	}
	return &v, nil
}

func (p *jsonParser) space() {
	for p.pos < len(p.b) {
		switch p.b[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// describe names the byte at pos for an error.
func (p *jsonParser) describe() string {
	if p.pos >= len(p.b) {
		return "end of input"
	}
	return fmt.Sprintf("%q", p.b[p.pos])
}

func (p *jsonParser) value(depth int) (jsonValue, error) {
	p.space()
	v := jsonValue{off: p.pos}
	if p.pos >= len(p.b) {
		return v, p.errorAt(p.pos, "unexpected end of input")
	}
	switch c := p.b[p.pos]; {
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return v, p.errorAt(p.pos, "nested deeper than a manifest is")
		}
		if c == '{' {
			return p.object(depth + 1)
		}
		return p.array(depth + 1)
	case c == '"':
		s, err := p.string()
		v.kind, v.text = jsonString, s
		return v, err
	case c == '-' || c >= '0' && c <= '9':
		s, err := p.number()
		v.kind, v.text = jsonNumber, s
		return v, err
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(p.b[p.pos:], []byte(lit)) {
				p.pos += len(lit)
				v.kind, v.text = jsonLiteral, lit
				return v, nil
			}
		}
		return v, p.errorAt(p.pos, "unexpected %s where a value should start", p.describe())
	}
}

func (p *jsonParser) object(depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonObject, off: p.pos}
	p.pos++ // {
	p.space()
	if p.pos < len(p.b) && p.b[p.pos] == '}' {
		p.pos++
		return v, nil
	}
	for {
		p.space()
		if p.pos >= len(p.b) || p.b[p.pos] != '"' {
			return v, p.errorAt(p.pos, "unexpected %s where a key should start", p.describe())
		}
		m := jsonMember{keyOff: p.pos}
		var err error
		if m.key, err = p.string(); err != nil {
			return v, err
		}
		p.space()
		if p.pos >= len(p.b) || p.b[p.pos] != ':' {
			return v, p.errorAt(p.pos, "unexpected %s after key %q (want ':')", p.describe(), m.key)
		}
		p.pos++
		if m.value, err = p.value(depth); err != nil {
			return v, err
		}
		v.members = append(v.members, m)
		p.space()
		if p.pos < len(p.b) && p.b[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.pos < len(p.b) && p.b[p.pos] == '}' {
			p.pos++
			return v, nil
		}
		return v, p.errorAt(p.pos, "unexpected %s in an object (want ',' or '}')", p.describe())
	}
}

func (p *jsonParser) array(depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonArray, off: p.pos}
	p.pos++ // [
	p.space()
	if p.pos < len(p.b) && p.b[p.pos] == ']' {
		p.pos++
		return v, nil
	}
	for {
		e, err := p.value(depth)
		if err != nil {
			return v, err
		}
		v.elems = append(v.elems, e)
		p.space()
		if p.pos < len(p.b) && p.b[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.pos < len(p.b) && p.b[p.pos] == ']' {
			p.pos++
			return v, nil
		}
		return v, p.errorAt(p.pos, "unexpected %s in an array (want ',' or ']')", p.describe())
	}
}

// string parses a string at pos (which holds '"') and returns its decoded text.
func (p *jsonParser) string() (string, error) {
	start := p.pos
	p.pos++
	var out []byte
	for {
		if p.pos >= len(p.b) {
			return "", p.errorAt(start, "string not terminated")
		}
		c := p.b[p.pos]
		switch {
		case c == '"':
			p.pos++
			return string(out), nil
		case c < 0x20:
			return "", p.errorAt(p.pos, "control character 0x%02x in a string (must be escaped)", c)
		case c == '\\':
			r, err := p.escape()
			if err != nil {
				return "", err
			}
			out = utf8.AppendRune(out, r)
		case c < utf8.RuneSelf:
			out = append(out, c)
			p.pos++
		default:
			r, n := utf8.DecodeRune(p.b[p.pos:])
			if r == utf8.RuneError && n == 1 {
				return "", p.errorAt(p.pos, "invalid UTF-8 in a string")
			}
			out = append(out, p.b[p.pos:p.pos+n]...)
			p.pos += n
		}
	}
}

// escape parses the escape sequence at pos (which holds '\').
func (p *jsonParser) escape() (rune, error) {
	at := p.pos
	if p.pos+1 >= len(p.b) {
		return 0, p.errorAt(at, "string not terminated")
	}
	c := p.b[p.pos+1]
	p.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, err := p.hex4(at)
		if err != nil {
			return 0, err
		}
		switch {
		case r == 0:
			// PostgreSQL's JSON lexer refuses it too: a path cannot hold NUL
			return 0, p.errorAt(at, "\\u0000 in a string")
		case utf16.IsSurrogate(r):
			if r < 0xDC00 && p.pos+1 < len(p.b) && p.b[p.pos] == '\\' && p.b[p.pos+1] == 'u' {
				p.pos += 2
				r2, err := p.hex4(at)
				if err != nil {
					return 0, err
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					return dec, nil
				}
			}
			return 0, p.errorAt(at, "lone UTF-16 surrogate in a \\u escape")
		}
		return r, nil
	}
	return 0, p.errorAt(at, "bad escape \\%c in a string", c)
}

// hex4 parses the four hex digits of a \u escape at pos.
func (p *jsonParser) hex4(at int) (rune, error) {
	if p.pos+4 > len(p.b) {
		return 0, p.errorAt(at, "bad \\u escape")
	}
	n, err := strconv.ParseUint(string(p.b[p.pos:p.pos+4]), 16, 16)
	if err != nil {
		return 0, p.errorAt(at, "bad \\u escape")
	}
	p.pos += 4
	return rune(n), nil
}

// number parses a JSON number at pos and returns its text.
func (p *jsonParser) number() (string, error) {
	start := p.pos
	digits := func() int {
		n := 0
		for p.pos < len(p.b) && p.b[p.pos] >= '0' && p.b[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	if p.b[p.pos] == '-' {
		p.pos++
	}
	switch {
	case p.pos < len(p.b) && p.b[p.pos] == '0':
		p.pos++
	case digits() == 0:
		return "", p.errorAt(start, "bad number")
	}
	if p.pos < len(p.b) && p.b[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return "", p.errorAt(start, "bad number")
		}
	}
	if p.pos < len(p.b) && (p.b[p.pos] == 'e' || p.b[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.b) && (p.b[p.pos] == '+' || p.b[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return "", p.errorAt(start, "bad number")
		}
	}
	return string(p.b[start:p.pos]), nil
}
