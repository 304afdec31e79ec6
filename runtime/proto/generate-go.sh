#!/usr/bin/env bash
# Regenerates the Go message and service stubs of runtime.proto for the Go router (runtime/router).
# Needs grpcio-tools (protoc) in the project's venv and the two Go plugins, installed by this script:
#   protoc-gen-go v1.36.12, protoc-gen-go-grpc v1.6.2 (from the Go module proxy, into $(go env GOPATH)/bin).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
bin="$(go env GOPATH)/bin"
[[ -x "$bin/protoc-gen-go" ]] || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[[ -x "$bin/protoc-gen-go-grpc" ]] || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
out="$here/../router/internal/pb"
mkdir -p "$out"
# The .proto names no go_package (its Python module is generated from the same file): give it here.
mapping="Mmetaparticle/v1/runtime.proto=metaparticle/router/internal/pb;pb"
"$python" -m grpc_tools.protoc -I"$here" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative --go_opt="$mapping" \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative --go-grpc_opt="$mapping" \
  "$here/metaparticle/v1/runtime.proto"
mv "$out/metaparticle/v1/"*.go "$out/"
rm -rf "$out/metaparticle"
