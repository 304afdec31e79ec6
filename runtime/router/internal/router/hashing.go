package router

import (
	"encoding/binary"
	"math"
	"math/big"
	"strconv"
	"strings"

	"golang.org/x/crypto/blake2b"

	"metaparticle/router/internal/pyjson"
)

// KeyHash is hashing.key_hash: blake2b (8-byte digest, little endian) of a str key's UTF-8 bytes,
// or of json.dumps(key, sort_keys=True, separators=(",", ":")) for any other JSON value, in which
// every float with an integral value is written as that integer (1, 1.0 and 1e0 hash equally).
func KeyHash(key pyjson.Value) uint64 {
	var data []byte
	if key.Kind == pyjson.String {
		data = []byte(key.Text)
	} else {
		data = pyjson.DumpsCompactSorted(integralFloatsAsInts(key))
	}
	h, _ := blake2b.New(8, nil)
	h.Write(data)
	return binary.LittleEndian.Uint64(h.Sum(nil))
}

// integralFloatsAsInts is hashing._integral_floats_as_ints: 1.0 -> 1, 1e300 -> its exact integer.
func integralFloatsAsInts(v pyjson.Value) pyjson.Value {
	switch v.Kind {
	case pyjson.Float:
		if v.Float == math.Trunc(v.Float) {
			i, _ := new(big.Float).SetFloat64(v.Float).Int(nil)
			return pyjson.IntText(i.String())
		}
	case pyjson.Array, pyjson.Object:
		out := v
		out.Items = make([]pyjson.Value, len(v.Items))
		for i := range v.Items {
			out.Items[i] = integralFloatsAsInts(v.Items[i])
		}
		return out
	}
	return v
}

// JumpHash is hashing.jump_hash (Lamping & Veach), with Python's float arithmetic.
func JumpHash(key uint64, buckets int) int {
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// ShardFor is hashing.shard_for.
func ShardFor(key pyjson.Value, shards int) int { return JumpHash(KeyHash(key), shards) }

// KeyAtPath is hashing.key_at_path: the value at a dotted path; the walked path when missing.
func KeyAtPath(request pyjson.Value, path string) (pyjson.Value, string, bool) {
	value := request
	end := 0
	for _, part := range strings.Split(path, ".") {
		if end > 0 {
			end++
		}
		end += len(part)
		switch {
		case value.Kind == pyjson.Object:
			v, ok := value.Get(part)
			if !ok {
				return pyjson.Value{}, path[:end], false
			}
			value = *v
		case value.Kind == pyjson.Array && isDigits(part):
			i, err := strconv.Atoi(part)
			if err != nil || i >= len(value.Items) {
				return pyjson.Value{}, path[:end], false
			}
			value = value.Items[i]
		default:
			return pyjson.Value{}, path[:end], false
		}
	}
	return value, "", true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
