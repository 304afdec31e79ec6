#!/usr/bin/env bash
# Regenerates the Python message module from runtime.proto (needs grpcio-tools: pip install -e '.[dev]').
# Routers use generic handlers over raw bytes, so only the message module is generated.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../metaparticle_runtime/proto"
mkdir -p "$out"
python -m grpc_tools.protoc -I"$here" --python_out="$out" --pyi_out="$out" "$here/metaparticle/v1/runtime.proto"
mv "$out/metaparticle/v1/runtime_pb2.py" "$out/runtime_pb2.py"
mv "$out/metaparticle/v1/runtime_pb2.pyi" "$out/runtime_pb2.pyi"
rm -rf "$out/metaparticle"
