#!/usr/bin/env bash
# Installs what the benchmarks need beyond the project's venv: h2load (Debian nghttp2-client) and nginx
# (Debian nginx-light) as the load generator and the baseline proxy, py-spy (profiles the router), and
# uvloop (a runtime dependency; here for venvs made before it was one) into .venv. Needs root for
# apt-get; installs only what is missing. The ceiling run builds bench/backend with Go 1.24+ when Go is on PATH (Debian 12's
# golang-go is too old, so it is not installed here: without Go that section is skipped, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system nginx on port 80 where an init system runs; the benchmark starts its own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
  fi
fi
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python -m pip install --quiet py-spy uvloop
fi
if command -v go >/dev/null; then
  echo "setup: Go $(go env GOVERSION) found: the ceiling run will build bench/backend"
else
  echo "setup: Go not found: the ceiling run will be skipped (install Go 1.24+ to run it)"
fi
