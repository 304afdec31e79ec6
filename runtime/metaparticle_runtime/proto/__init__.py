"""Generated protobuf messages of the runtime service (see runtime/proto/generate.sh)."""
