package router

import (
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"metaparticle/router/internal/pyjson"
)

// ErrorMetadataKey carries the JSON error document in gRPC trailing metadata.
const ErrorMetadataKey = "mp-error-bin"

// codeNames are grpc.StatusCode names as the Python runtime writes them in documents.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// httpStatus is errors.HTTP_STATUS.
var httpStatus = map[codes.Code]int{
	codes.InvalidArgument: 400, codes.NotFound: 404, codes.ResourceExhausted: 429, codes.Unknown: 500,
	codes.Internal: 500, codes.Unimplemented: 501, codes.Unavailable: 503, codes.DeadlineExceeded: 504, codes.Canceled: 499,
}

// RoleError is errors.RoleError: a status code, a message and details for the caller.
type RoleError struct {
	Code    codes.Code
	Message string
	Details *pyjson.Obj
}

func newError(code codes.Code, message string) *RoleError {
	return &RoleError{Code: code, Message: message, Details: pyjson.NewObj()}
}

func (e *RoleError) with(key string, v pyjson.Value) *RoleError { e.Details.Set(key, v); return e }

func intV(n int) pyjson.Value { return pyjson.IntText(strconv.Itoa(n)) }

// HTTPStatus is RoleError.http_status.
func (e *RoleError) HTTPStatus() int {
	details := e.Details.Value()
	if v, ok := details.Get("too_large"); ok && truthy(*v) {
		return 413
	}
	if v, ok := details.Get("response_too_large"); ok && truthy(*v) {
		return 500 // the result is too large: not the caller's fault, and no use retrying
	}
	if s, ok := httpStatus[e.Code]; ok {
		return s
	}
	return 500
}

func truthy(v pyjson.Value) bool {
	switch v.Kind {
	case pyjson.Bool:
		return v.Bool
	case pyjson.Int:
		return v.Text != "0"
	case pyjson.Float:
		return v.Float != 0
	case pyjson.String:
		return v.Text != ""
	case pyjson.Array, pyjson.Object:
		return len(v.Items) > 0
	}
	return false
}

// Document is RoleError.document() serialised like json.dumps.
func (e *RoleError) Document() []byte {
	doc := pyjson.NewObj().Set("error", pyjson.Str(e.Message)).Set("code", pyjson.Str(codeNames[e.Code]))
	v := e.Details.Value()
	for i, k := range v.Keys {
		doc.Set(k, v.Items[i])
	}
	return pyjson.Dumps(doc.Value())
}

// GRPC is the status to answer, with the document in the trailer.
func (e *RoleError) GRPC() (error, metadata.MD) {
	return status.Error(e.Code, e.Message), metadata.Pairs(ErrorMetadataKey, string(e.Document()))
}

// detail is one (key, value) pair added with setdefault.
type detail struct {
	key string
	val pyjson.Value
}

// fromRPCError is RoleError.from_rpc_error: the downstream error, `context` prefixed to its message.
func fromRPCError(err error, trailer metadata.MD, context string, extra []detail) *RoleError {
	st := status.Convert(err)
	code, message := st.Code(), st.Message()
	details := pyjson.NewObj()
	for _, raw := range trailer.Get(ErrorMetadataKey) {
		details = pyjson.NewObj()
		if pyjson.UTF8Error([]byte(raw)) == "" {
			if v, err := pyjson.Loads([]byte(raw)); err == nil && v.Kind == pyjson.Object {
				details = pyjson.ObjOf(v)
			}
		}
	}
	details.Pop("error")
	details.Pop("code")
	if code == codes.Unavailable && details.Len() == 0 {
		message = "unavailable: " + message
	}
	if code == codes.DeadlineExceeded && details.Len() == 0 {
		message = "deadline exceeded"
	}
	if context != "" && code != codes.InvalidArgument {
		message = context + ": " + message
	}
	for _, d := range extra {
		details.SetDefault(d.key, d.val)
	}
	if message == "" {
		message = "error"
	}
	return &RoleError{Code: code, Message: message, Details: details}
}

func reprStr(s string) string { return pyjson.Repr(s) }
