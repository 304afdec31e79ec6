package pyjson

import (
	"sort"
	"strconv"
	"strings"
)

// Dumps is Python's json.dumps(value) (ensure_ascii, ", " and ": ").
func Dumps(v Value) []byte { return appendValue(nil, v, ", ", ": ", false) }

// DumpsCompactSorted is json.dumps(value, sort_keys=True, separators=(",", ":")).
func DumpsCompactSorted(v Value) []byte { return appendValue(nil, v, ",", ":", true) }

func appendValue(b []byte, v Value, item, key string, sorted bool) []byte {
	switch v.Kind {
	case Null:
		return append(b, "null"...)
	case Bool:
		if v.Bool {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case Int:
		return append(b, v.Text...)
	case Float:
		return append(b, FloatRepr(v.Float)...)
	case String:
		return AppendString(b, v.Text)
	case Array:
		b = append(b, '[')
		for i := range v.Items {
			if i > 0 {
				b = append(b, item...)
			}
			b = appendValue(b, v.Items[i], item, key, sorted)
		}
		return append(b, ']')
	}
	order := make([]int, len(v.Keys))
	for i := range order {
		order[i] = i
	}
	if sorted {
		sort.SliceStable(order, func(i, j int) bool { return v.Keys[order[i]] < v.Keys[order[j]] })
	}
	b = append(b, '{')
	for n, i := range order {
		if n > 0 {
			b = append(b, item...)
		}
		b = AppendString(b, v.Keys[i])
		b = append(b, key...)
		b = appendValue(b, v.Items[i], item, key, sorted)
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

func appendU(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}

// AppendString appends a WTF-8 string as json.dumps writes it with ensure_ascii.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		r, size := decodeWTF8(s[i:])
		i += size
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r == '\b':
			b = append(b, '\\', 'b')
		case r == '\f':
			b = append(b, '\\', 'f')
		case r >= ' ' && r <= '~':
			b = append(b, byte(r))
		case r >= 0x10000:
			v := r - 0x10000
			b = appendU(b, 0xd800|(v>>10)&0x3ff)
			b = appendU(b, 0xdc00|v&0x3ff)
		default:
			b = appendU(b, r)
		}
	}
	return append(b, '"')
}

// decodeWTF8 decodes one code point, lone surrogates included (invalid bytes count as themselves).
func decodeWTF8(s string) (rune, int) {
	c := s[0]
	switch {
	case c < 0x80:
		return rune(c), 1
	case c >= 0xe0 && c < 0xf0 && len(s) >= 3:
		return rune(c&0x0f)<<12 | rune(s[1]&0x3f)<<6 | rune(s[2]&0x3f), 3
	case c >= 0xc0 && c < 0xe0 && len(s) >= 2:
		return rune(c&0x1f)<<6 | rune(s[1]&0x3f), 2
	case c >= 0xf0 && len(s) >= 4:
		return rune(c&0x07)<<18 | rune(s[1]&0x3f)<<12 | rune(s[2]&0x3f)<<6 | rune(s[3]&0x3f), 4
	}
	return rune(c), 1
}

// FloatRepr is Python's repr(float) for finite values: the shortest digits that round-trip,
// fixed notation for exponents -5 < e < 16 (with ".0" when integral), else "1.5e+16" / "1e-05".
func FloatRepr(f float64) string {
	if f == 0 {
		if 1/f < 0 {
			return "-0.0"
		}
		return "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // "-1.2345e+17"
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expText, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expText)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1
	if decpt <= -4 || decpt > 16 {
		out := digits[:1]
		if len(digits) > 1 {
			out += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		ex := strconv.Itoa(exp)
		if len(ex) < 2 {
			ex = "0" + ex
		}
		return sign + out + "e" + es + ex
	}
	switch {
	case decpt <= 0:
		return sign + "0." + strings.Repeat("0", -decpt) + digits
	case decpt >= len(digits):
		return sign + digits + strings.Repeat("0", decpt-len(digits)) + ".0"
	}
	return sign + digits[:decpt] + "." + digits[decpt:]
}
