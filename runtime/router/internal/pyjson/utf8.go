package pyjson

import (
	"fmt"
	"unicode/utf8"
)

func cont(b byte) bool { return b >= 0x80 && b <= 0xbf }

// UTF8Error is why CPython's strict UTF-8 decoder refuses data, as "REASON at byte START"
// (UnicodeDecodeError's reason and start); "" when data is valid UTF-8.
func UTF8Error(data []byte) string {
	if utf8.Valid(data) {
		return ""
	}
	n := len(data)
	for i := 0; i < n; {
		c := data[i]
		left := n - i
		reason, size := "", 1
		switch {
		case c < 0x80:
		case c < 0xc2:
			reason = "invalid start byte"
		case c < 0xe0:
			size = 2
			if left < 2 {
				reason = "unexpected end of data"
			} else if !cont(data[i+1]) {
				reason = "invalid continuation byte"
			}
		case c < 0xf0:
			size = 3
			bad2 := func(b byte) bool { return !cont(b) || (c == 0xe0 && b < 0xa0) || (c == 0xed && b >= 0xa0) }
			switch {
			case left >= 2 && bad2(data[i+1]):
				reason = "invalid continuation byte"
			case left < 3:
				reason = "unexpected end of data"
			case !cont(data[i+2]):
				reason = "invalid continuation byte"
			}
		case c < 0xf5:
			size = 4
			bad2 := func(b byte) bool { return !cont(b) || (c == 0xf0 && b < 0x90) || (c == 0xf4 && b >= 0x90) }
			switch {
			case left >= 2 && bad2(data[i+1]):
				reason = "invalid continuation byte"
			case left >= 3 && !cont(data[i+2]):
				reason = "invalid continuation byte"
			case left < 4:
				reason = "unexpected end of data"
			case !cont(data[i+3]):
				reason = "invalid continuation byte"
			}
		default:
			reason = "invalid start byte"
		}
		if reason != "" {
			return fmt.Sprintf("%s at byte %d", reason, i)
		}
		i += size
	}
	return ""
}
