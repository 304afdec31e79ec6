package router

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"

	"metaparticle/router/internal/pyjson"
)

// httpHandler is http_entry.make_app: POST / answers the pattern's JSON result, GET /healthz its
// health; every refusal is a JSON document, as aiohttp with the runtime's middleware answers.
func (rt *Runtime) httpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.stopping.Load() {
			// Stopping: this connection closes after the answer, so a keep-alive client sends
			// its next request on a new one (see stopAcceptingHTTP).
			w.Header().Set("Connection", "close")
		}
		switch {
		case r.URL.Path == "/" && r.Method == http.MethodPost:
			rt.httpCall(w, r)
		case r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			serving, detail := rt.TopologyHealth(r.Context())
			status, word := 503, "NOT_SERVING"
			if serving {
				status, word = 200, "SERVING"
			}
			doc := pyjson.NewObj().Set("status", pyjson.Str(word))
			d := detail.Value()
			for i, k := range d.Keys {
				doc.Set(k, d.Items[i])
			}
			writeJSON(w, status, pyjson.Dumps(doc.Value()))
		case r.URL.Path == "/metrics" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			rt.metrics.Handler().ServeHTTP(w, r)
		case r.URL.Path == "/" || r.URL.Path == "/healthz" || r.URL.Path == "/metrics":
			writeError(w, 405, "Method Not Allowed", "METHOD_NOT_ALLOWED")
		default:
			writeError(w, 404, "Not Found", "NOT_FOUND")
		}
	})
}

func (rt *Runtime) httpCall(w http.ResponseWriter, r *http.Request) {
	deadline := time.Now().Add(rt.cfg.Timeout)
	limit := rt.cfg.MaxRequestBytes
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		writeError(w, 400, "Bad Request", "INVALID_ARGUMENT")
		return
	}
	if len(body) > limit {
		e := newError(codes.ResourceExhausted, fmt.Sprintf("request body is larger than the limit of %d bytes", limit)).
			with("too_large", pyjson.BoolV(true)).with("limit", intV(limit))
		writeJSON(w, 413, e.Document())
		return
	}
	reply, rerr := rt.Dispatch(withTraceContext(r.Context(), r.Header.Get), wrap(body), deadline)
	if rerr == nil {
		var out []byte
		if out, rerr = unwrap(reply); rerr == nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(len(out)))
			w.WriteHeader(200)
			w.Write(out)
			return
		}
		rerr = newError(codes.Internal, "the reply is not a metaparticle.v1.Payload message")
	}
	writeJSON(w, rerr.HTTPStatus(), rerr.Document())
}

func writeError(w http.ResponseWriter, status int, message, code string) {
	doc := pyjson.NewObj().Set("error", pyjson.Str(message)).Set("code", pyjson.Str(code))
	writeJSON(w, status, pyjson.Dumps(doc.Value()))
}

// writeJSON is aiohttp's web.json_response.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// opsHandler is ops.make_app (MP_METRICS_PORT): GET /metrics, and GET /healthz answering 200 while
// this router's own gRPC health is SERVING, 503 otherwise (starting, draining).
func (rt *Runtime) opsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		get := r.Method == http.MethodGet || r.Method == http.MethodHead
		switch {
		case r.URL.Path == "/metrics" && get:
			rt.metrics.Handler().ServeHTTP(w, r)
		case r.URL.Path == "/healthz" && get:
			status, word := 503, "NOT_SERVING"
			if rt.Serving() {
				status, word = 200, "SERVING"
			}
			writeJSON(w, status, pyjson.Dumps(pyjson.NewObj().Set("status", pyjson.Str(word)).Value()))
		case r.URL.Path == "/metrics" || r.URL.Path == "/healthz":
			writeError(w, 405, "Method Not Allowed", "METHOD_NOT_ALLOWED")
		default:
			writeError(w, 404, "Not Found", "NOT_FOUND")
		}
	})
}
