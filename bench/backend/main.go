// Command bench-backend is a near-free gRPC backend for the benchmark's ceiling run: it answers every
// unary call on h2c (HTTP/2 without TLS) with the request's own message (a Payload echoes as itself)
// and grpc-status 0, so whatever sits in front of it is what the run measures. Health answers
// SERVING, to Check and to Watch (gRPC's client-side health checking, which routers' channels use,
// holds a Watch stream open per connection). Standard library only.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"strconv"
)

// servingReply is a gRPC frame of HealthCheckResponse{status: SERVING}: flag 0, length 2, field 1 = 1.
var servingReply = []byte{0, 0, 0, 0, 2, 0x08, 0x01}

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "host:port to listen on")
	flag.Parse()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.URL.Path == "/grpc.health.v1.Health/Watch" {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(http.StatusOK)
			w.Write(servingReply)
			if flusher, ok := w.(http.Flusher); ok {
				flusher.Flush()
			}
			<-r.Context().Done()
			return
		}
		if r.URL.Path == "/grpc.health.v1.Health/Check" {
			body = servingReply
		}
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Trailer", "Grpc-Status")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		h.Set("Grpc-Status", "0")
	})
	server := &http.Server{Addr: *addr, Handler: handler}
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	server.Protocols = protocols
	log.Fatal(server.ListenAndServe())
}
