package router

import (
	"bytes"
	"fmt"

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
// same messages, in the same order (size, empty, nesting, UTF-8, JSON).
func decode(data []byte, maxBytes, maxDepth int) (pyjson.Value, *RoleError) {
	if len(data) > maxBytes {
		return pyjson.Value{}, newError(codes.ResourceExhausted, fmt.Sprintf("request body is %d bytes, the limit is %d", len(data), maxBytes)).
			with("too_large", pyjson.BoolV(true)).with("limit", intV(maxBytes))
	}
	if len(bytes.Trim(data, " \t\n\r\x0b\x0c")) == 0 {
		return pyjson.Value{}, newError(codes.InvalidArgument, "request body is empty; send a JSON document")
	}
	if bytes.Count(data, []byte("["))+bytes.Count(data, []byte("{")) > maxDepth && tooDeep(data, maxDepth) {
		return pyjson.Value{}, newError(codes.InvalidArgument, fmt.Sprintf("request JSON is nested deeper than %d levels", maxDepth)).
			with("limit", intV(maxDepth))
	}
	if reason := pyjson.UTF8Error(data); reason != "" {
		return pyjson.Value{}, newError(codes.InvalidArgument, "request body is not UTF-8: "+reason)
	}
	v, err := pyjson.Loads(data)
	if err != nil {
		return pyjson.Value{}, newError(codes.InvalidArgument, "request body is not valid JSON: "+err.Error())
	}
	return v, nil
}

// tooDeep is payload._check_depth_raw: bracket nesting outside strings, without decoding.
func tooDeep(data []byte, maxDepth int) bool {
	depth, inString, escaped := 0, false, false
	for _, c := range data {
		switch {
		case inString:
			if escaped {
				escaped = false
			} else if c == '\\' {
				escaped = true
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > maxDepth {
				return true
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return false
}
