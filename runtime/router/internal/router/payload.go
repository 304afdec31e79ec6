package router

import (
	"bytes"
	"fmt"
	"regexp"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"metaparticle/router/internal/pb"
	"metaparticle/router/internal/pyjson"
)

// wrap is payload.wrap: JSON bytes -> a serialised Payload message.
func wrap(body []byte) []byte {
	if len(body) == 0 {
		return nil // proto3 leaves an empty bytes field out
	}
	b := protowire.AppendTag(make([]byte, 0, len(body)+6), 1, protowire.BytesType)
	return protowire.AppendBytes(b, body)
}

// unwrap is payload.unwrap: a serialised Payload message -> its JSON bytes.
func unwrap(message []byte) ([]byte, *RoleError) {
	var p pb.Payload
	if err := (proto.UnmarshalOptions{}).Unmarshal(message, &p); err != nil {
		return nil, newError(codes.InvalidArgument, "request is not a metaparticle.v1.Payload message")
	}
	return p.Json, nil
}

// decode is payload.decode: the request's JSON, refusing what the Python runtime refuses, with the
// same messages, in the same order: size, empty, decoded-size estimate and nesting (both from byte
// counts, before anything is built), UTF-8, JSON.
func decode(data []byte, maxBytes, maxDepth int) (pyjson.Value, *RoleError) {
	if len(data) > maxBytes {
		return pyjson.Value{}, newError(codes.ResourceExhausted, fmt.Sprintf("request body is %d bytes, the limit is %d", len(data), maxBytes)).
			with("too_large", pyjson.BoolV(true)).with("limit", intV(maxBytes))
	}
	if len(bytes.Trim(data, " \t\n\r\x0b\x0c")) == 0 {
		return pyjson.Value{}, newError(codes.InvalidArgument, "request body is empty; send a JSON document")
	}
	deep := bytes.Count(data, []byte("["))+bytes.Count(data, []byte("{")) > maxDepth // else it cannot be too deep
	depth := -1
	if deep {
		depth = maxDepth
	}
	stripped, err := checkDecodedSize(data, maxBytes, depth)
	if err != nil {
		return pyjson.Value{}, err
	}
	if deep {
		if stripped == nil {
			stripped = stripStrings(data)
		}
		if err := checkDepth(stripped, maxDepth); err != nil {
			return pyjson.Value{}, err
		}
	}
	if reason := pyjson.UTF8Error(data); reason != "" {
		return pyjson.Value{}, newError(codes.InvalidArgument, "request body is not UTF-8: "+reason)
	}
	v, jerr := pyjson.Loads(data)
	if jerr != nil {
		return pyjson.Value{}, newError(codes.InvalidArgument, "request body is not valid JSON: "+jerr.Error())
	}
	return v, nil
}

// What a decoded request may cost, per byte of the request limit, and the estimated CPython sizes
// of decoded values (payload.DECODED_BYTES_PER_LIMIT_BYTE, _LIST_COST, ...).
const (
	decodedBytesPerLimitByte                     = 8
	listCost, dictCost, stringCost, itemCost int = 64, 240, 56, 8
)

// jsonString is payload._STRING: a JSON string, escapes included.
var jsonString = regexp.MustCompile(`"[^"\\]*(?:\\.[^"\\]*)*"`)

// stripStrings is payload._strip_strings: every string's contents removed.
func stripStrings(data []byte) []byte {
	if bytes.IndexByte(data, '"') < 0 {
		return data
	}
	return jsonString.ReplaceAllLiteral(data, []byte(`""`))
}

func count(data []byte, sep string) int { return bytes.Count(data, []byte(sep)) }

// decodedSizeEstimate is payload.decoded_size_estimate.
func decodedSizeEstimate(data []byte) int {
	keys := count(data, `":`)
	return listCost*count(data, "[") + dictCost*count(data, "{") + stringCost*max(0, count(data, `"`)/2-keys) + itemCost*(count(data, ",")+keys)
}

// checkDecodedSize is payload._check_decoded_size: refuses a body whose decoded form would exceed
// the budget; the string-stripped body when it had to be computed. maxDepth < 0: no depth check.
func checkDecodedSize(data []byte, maxBytes, maxDepth int) ([]byte, *RoleError) {
	budget := decodedBytesPerLimitByte * maxBytes
	quoted := bytes.IndexByte(data, '"') >= 0
	if !quoted {
		if maxDepth >= 0 {
			if err := checkOpeningRun(data, maxDepth); err != nil {
				return nil, err
			}
		}
		if lists := listCost * count(data, "["); lists > budget {
			return nil, tooLarge(lists, budget)
		}
	}
	estimate := decodedSizeEstimate(data)
	if estimate <= budget {
		return nil, nil
	}
	strings := count(data, `"`)/2 - count(data, `\"`) - count(data, `":`)
	var stripped []byte
	if stringCost*strings <= budget && quoted {
		stripped = stripStrings(data)
		if maxDepth >= 0 {
			if err := checkOpeningRun(stripped, maxDepth); err != nil {
				return nil, err
			}
		}
		estimate = decodedSizeEstimate(stripped)
	}
	if estimate > budget {
		return nil, tooLarge(estimate, budget)
	}
	return stripped, nil
}

// brackets is payload's translate(_CURLY_AS_SQUARE, _NOT_BRACKET): only the brackets, all square.
func brackets(data []byte) []byte {
	out := make([]byte, 0, 64)
	for _, c := range data {
		switch c {
		case '[', '{':
			out = append(out, '[')
		case ']', '}':
			out = append(out, ']')
		}
	}
	return out
}

// checkOpeningRun is payload._check_opening_run: max_depth + 1 brackets opened in a row.
func checkOpeningRun(stripped []byte, maxDepth int) *RoleError {
	if bytes.Contains(brackets(stripped), bytes.Repeat([]byte("["), maxDepth+1)) {
		return tooDeep(maxDepth)
	}
	return nil
}

// checkDepth is payload._check_depth: each pass removes the innermost pairs, one level.
func checkDepth(stripped []byte, maxDepth int) *RoleError {
	b := brackets(stripped)
	for done := 0; done <= maxDepth; done++ {
		if len(b) == 0 {
			return nil
		}
		shorter := bytes.ReplaceAll(b, []byte("[]"), nil)
		if len(shorter) == len(b) { // only "]]..[[" is left: unbalanced
			if done+count(b, "[") > maxDepth {
				return tooDeep(maxDepth)
			}
			return nil
		}
		if done == maxDepth {
			return tooDeep(maxDepth)
		}
		b = shorter
	}
	return nil
}

func tooLarge(estimate, budget int) *RoleError {
	msg := fmt.Sprintf("request JSON would decode to at least about %d bytes of objects, more than %d (%dx the request size limit): send fewer or larger values",
		estimate, budget, decodedBytesPerLimitByte)
	return newError(codes.ResourceExhausted, msg).with("too_large", pyjson.BoolV(true)).with("limit", intV(budget))
}

func tooDeep(maxDepth int) *RoleError {
	return newError(codes.InvalidArgument, fmt.Sprintf("request JSON is nested deeper than %d levels", maxDepth)).with("limit", intV(maxDepth))
}
