// Command mp-echo-backend is a near-free metaparticle.v1.Function server for benchmarks: it answers
// every Call with a fixed reply (or echoes the request with -echo) and reports SERVING health, so a
// router's own cost can be measured without a function's cost on top.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

type raw struct{ b []byte }

type codec struct{ proto encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*raw); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*raw); ok {
		r.b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (codec) Name() string { return "proto" }

func main() {
	addr := flag.String("listen", "127.0.0.1:50051", "host:port to serve on")
	reply := flag.String("reply", `{"ok":true}`, "the JSON every call answers")
	echo := flag.Bool("echo", false, "answer each request's own bytes instead of -reply")
	flag.Parse()
	fixed := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte(*reply))
	call := func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in raw
		if err := dec(&in); err != nil {
			return nil, err
		}
		if *echo {
			return &in, nil
		}
		return &raw{fixed}, nil
	}
	server := grpc.NewServer(grpc.ForceServerCodecV2(codec{encoding.GetCodecV2("proto")}))
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "metaparticle.v1.Function",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Call", Handler: call}},
	}, struct{}{})
	healthpb.RegisterHealthServer(server, health.NewServer()) // "" is SERVING from the start
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mp-echo-backend:", err)
		os.Exit(1)
	}
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		server.Stop()
	}()
	server.Serve(lis)
}
