package pyjson

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxIntDigits is CPython's default limit on int() of a decimal string (sys.get_int_max_str_digits).
const maxIntDigits = 4300

// Error is what Python's json.loads (with the runtime's parse_constant and parse_float) raises,
// as str(exception).
type Error struct{ Message string }

func (e *Error) Error() string { return e.Message }

type stop struct{ pos int } // the scanner's StopIteration(idx): "Expecting value" at pos

type decoder struct {
	s   []byte
	err *Error
	at  *stop
}

// Loads decodes valid UTF-8 text the way the runtime's payload.decode calls json.loads:
// NaN/Infinity refused ("NaN is not valid JSON"), floats that overflow refused ("the number 1e999
// is out of range"), ints over 4300 digits refused, error positions in characters like Python's.
func Loads(text []byte) (Value, error) {
	d := &decoder{s: text}
	if strings.HasPrefix(string(text), "\ufeff") {
		return Value{}, d.errAt("Unexpected UTF-8 BOM (decode using utf-8-sig)", 0)
	}
	idx := d.ws(0)
	v, end, ok := d.scan(idx)
	if !ok {
		return Value{}, d.failure()
	}
	end = d.ws(end)
	if end != len(d.s) {
		return Value{}, d.errAt("Extra data", end)
	}
	return v, nil
}

func (d *decoder) failure() error {
	if d.err != nil {
		return d.err
	}
	return d.errAt("Expecting value", d.at.pos)
}

// errAt builds JSONDecodeError's message; pos is a byte offset, reported in characters.
func (d *decoder) errAt(msg string, pos int) *Error {
	if pos > len(d.s) {
		pos = len(d.s)
	}
	prefix := d.s[:pos]
	char := utf8.RuneCount(prefix)
	line := strings.Count(string(prefix), "\n") + 1
	col := char + 1
	if nl := strings.LastIndexByte(string(prefix), '\n'); nl >= 0 {
		col = char - utf8.RuneCount(prefix[:nl])
	}
	return &Error{Message: fmt.Sprintf("%s: line %d column %d (char %d)", msg, line, col, char)}
}

func (d *decoder) fail(msg string, pos int) (Value, int, bool) {
	d.err = d.errAt(msg, pos)
	return Value{}, 0, false
}

func (d *decoder) failValue(msg string) (Value, int, bool) {
	d.err = &Error{Message: msg}
	return Value{}, 0, false
}

func (d *decoder) stopAt(pos int) (Value, int, bool) {
	d.at = &stop{pos}
	return Value{}, 0, false
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (d *decoder) ws(i int) int {
	for i < len(d.s) && isWS(d.s[i]) {
		i++
	}
	return i
}

func (d *decoder) has(i int, lit string) bool {
	return i+len(lit) <= len(d.s) && string(d.s[i:i+len(lit)]) == lit
}

// scan is _json.c's scan_once_unicode.
func (d *decoder) scan(idx int) (Value, int, bool) {
	if idx >= len(d.s) {
		return d.stopAt(idx)
	}
	switch d.s[idx] {
	case '"':
		s, end, ok := d.scanString(idx + 1)
		return Value{Kind: String, Text: s}, end, ok
	case '{':
		return d.object(idx + 1)
	case '[':
		return d.array(idx + 1)
	case 'n':
		if d.has(idx, "null") {
			return Value{Kind: Null}, idx + 4, true
		}
	case 't':
		if d.has(idx, "true") {
			return Value{Kind: Bool, Bool: true}, idx + 4, true
		}
	case 'f':
		if d.has(idx, "false") {
			return Value{Kind: Bool}, idx + 5, true
		}
	case 'N':
		if d.has(idx, "NaN") {
			return d.failValue("NaN is not valid JSON")
		}
	case 'I':
		if d.has(idx, "Infinity") {
			return d.failValue("Infinity is not valid JSON")
		}
	case '-':
		if d.has(idx, "-Infinity") {
			return d.failValue("-Infinity is not valid JSON")
		}
	}
	return d.number(idx)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number is _match_number_unicode with parse_float=_finite_float and int() for integers.
func (d *decoder) number(start int) (Value, int, bool) {
	s, idx, last := d.s, start, len(d.s)-1
	if s[idx] == '-' {
		idx++
		if idx > last {
			return d.stopAt(start)
		}
	}
	switch {
	case s[idx] >= '1' && s[idx] <= '9':
		idx++
		for idx <= last && isDigit(s[idx]) {
			idx++
		}
	case s[idx] == '0':
		idx++
	default:
		return d.stopAt(start)
	}
	isFloat := false
	if idx < last && s[idx] == '.' && isDigit(s[idx+1]) {
		isFloat = true
		idx += 2
		for idx <= last && isDigit(s[idx]) {
			idx++
		}
	}
	if idx < last && (s[idx] == 'e' || s[idx] == 'E') {
		eStart := idx
		idx++
		if idx < last && (s[idx] == '-' || s[idx] == '+') {
			idx++
		}
		for idx <= last && isDigit(s[idx]) {
			idx++
		}
		if isDigit(s[idx-1]) {
			isFloat = true
		} else {
			idx = eStart
		}
	}
	text := string(s[start:idx])
	if isFloat {
		f, err := strconv.ParseFloat(text, 64)
		if _ = err; math.IsInf(f, 0) { // underflow (ErrRange with a finite value) is 0.0 in Python too
			return d.failValue("the number " + text + " is out of range")
		}
		return Value{Kind: Float, Float: f}, idx, true
	}
	digits := strings.TrimPrefix(text, "-")
	if len(digits) > maxIntDigits {
		return d.failValue(fmt.Sprintf("Exceeds the limit (%d digits) for integer string conversion: value has %d digits; use sys.set_int_max_str_digits() to increase the limit", maxIntDigits, len(digits)))
	}
	if digits == "0" {
		text = "0"
	}
	return Value{Kind: Int, Text: text}, idx, true
}

// scanString is scanstring_unicode (strict): end is the index after the opening quote.
func (d *decoder) scanString(end int) (string, int, bool) {
	s, n := d.s, len(d.s)
	begin := end - 1
	var out []byte
	for {
		next := end
		var c byte
		for ; next < n; next++ {
			c = s[next]
			if c == '"' || c == '\\' {
				break
			}
			if c <= 0x1f {
				d.err = d.errAt("Invalid control character at", next)
				return "", 0, false
			}
		}
		if next >= n {
			d.err = d.errAt("Unterminated string starting at", begin)
			return "", 0, false
		}
		if c == '"' {
			if out == nil {
				return string(s[end:next]), next + 1, true
			}
			out = append(out, s[end:next]...)
			return string(out), next + 1, true
		}
		out = append(out, s[end:next]...)
		next++
		if next == n {
			d.err = d.errAt("Unterminated string starting at", begin)
			return "", 0, false
		}
		c = s[next]
		if c != 'u' {
			end = next + 1
			var r byte
			switch c {
			case '"', '\\', '/':
				r = c
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			default:
				d.err = d.errAt("Invalid \\escape", end-2)
				return "", 0, false
			}
			out = append(out, r)
			continue
		}
		next++
		end = next + 4
		if end >= n {
			d.err = d.errAt("Invalid \\uXXXX escape", next-1)
			return "", 0, false
		}
		u, ok := hex4(s[next:end])
		if !ok {
			d.err = d.errAt("Invalid \\uXXXX escape", end-5)
			return "", 0, false
		}
		next = end
		if u >= 0xd800 && u <= 0xdbff && end+6 < n && s[next] == '\\' && s[next+1] == 'u' {
			end += 6
			u2, ok := hex4(s[next+2 : end])
			if !ok {
				d.err = d.errAt("Invalid \\uXXXX escape", end-5)
				return "", 0, false
			}
			if u2 >= 0xdc00 && u2 <= 0xdfff {
				u = 0x10000 + ((u - 0xd800) << 10) + (u2 - 0xdc00)
			} else {
				end -= 6
			}
		}
		out = appendWTF8(out, u)
	}
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// appendWTF8 encodes r as UTF-8, lone surrogates included (Python's "surrogatepass").
func appendWTF8(b []byte, r rune) []byte {
	if r >= 0xd800 && r <= 0xdfff {
		return append(b, byte(0xe0|r>>12), byte(0x80|(r>>6)&0x3f), byte(0x80|r&0x3f))
	}
	return utf8.AppendRune(b, r)
}

// object is _parse_object_unicode (3.11): idx is the index after '{'.
func (d *decoder) object(idx int) (Value, int, bool) {
	v := Value{Kind: Object}
	var index map[string]int
	last := len(d.s) - 1
	idx = d.ws(idx)
	if idx > last || d.s[idx] != '}' {
		for {
			if idx > last || d.s[idx] != '"' {
				return d.fail("Expecting property name enclosed in double quotes", idx)
			}
			key, next, ok := d.scanString(idx + 1)
			if !ok {
				return Value{}, 0, false
			}
			idx = d.ws(next)
			if idx > last || d.s[idx] != ':' {
				return d.fail("Expecting ':' delimiter", idx)
			}
			idx = d.ws(idx + 1)
			val, next, ok := d.scan(idx)
			if !ok {
				return Value{}, 0, false
			}
			index = v.set(key, val, index)
			idx = d.ws(next)
			if idx <= last && d.s[idx] == '}' {
				break
			}
			if idx > last || d.s[idx] != ',' {
				return d.fail("Expecting ',' delimiter", idx)
			}
			idx = d.ws(idx + 1)
		}
	}
	return v, idx + 1, true
}

// array is _parse_array_unicode (3.11): idx is the index after '['.
func (d *decoder) array(idx int) (Value, int, bool) {
	v := Value{Kind: Array}
	last := len(d.s) - 1
	idx = d.ws(idx)
	if idx > last || d.s[idx] != ']' {
		for {
			val, next, ok := d.scan(idx)
			if !ok {
				return Value{}, 0, false
			}
			v.Items = append(v.Items, val)
			idx = d.ws(next)
			if idx <= last && d.s[idx] == ']' {
				break
			}
			if idx > last || d.s[idx] != ',' {
				return d.fail("Expecting ',' delimiter", idx)
			}
			idx = d.ws(idx + 1)
		}
	}
	if idx > last || d.s[idx] != ']' {
		return d.fail("Expecting value", last)
	}
	return v, idx + 1, true
}
