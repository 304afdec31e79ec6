#!/usr/bin/env bash
# Installs what the benchmarks need beyond the project's venv: h2load (Debian nghttp2-client) and nginx
# (Debian nginx-light) as the load generator and the baseline proxy, py-spy (profiles the router), and
# uvloop (the runtime's optional faster event loop) into .venv. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v h2load >/dev/null || ! command -v nginx >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nghttp2-client nginx-light >/dev/null
  # The package starts a system nginx on port 80 where an init system runs; the benchmark starts its own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
  fi
fi
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python -m pip install --quiet py-spy uvloop
fi
