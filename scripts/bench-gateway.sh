#!/usr/bin/env bash
# Measure the gateway side by side with what it is compared against, in one
# run: the browser path (gateway + connector) against the connector alone
# and direct TCP; the HTTP app proxy against nginx and JupyterHub's
# configurable-http-proxy in front of the same app; memory with 1,000
# viewers; launch latency; the session list with 10,000 sessions. Writes
# .artifacts/bench-gateway.md. Installs nginx (Debian) and
# configurable-http-proxy (npm, into .artifacts/chp, not the repo's
# package.json) when missing. Needs root for the session account (as
# `make test`) and Xvnc for the desktop launch. About two minutes on two
# cores, after the builds.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  # Debian's package starts a service on port 80; the benchmark runs its own.
  if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
fi
chp=.artifacts/chp/node_modules/.bin/configurable-http-proxy
if ! command -v configurable-http-proxy >/dev/null && [ ! -x "$chp" ]; then
  mkdir -p .artifacts/chp
  npm install --prefix .artifacts/chp --no-audit --no-fund --loglevel=error configurable-http-proxy >/dev/null
fi
if [ -x "$chp" ]; then
  export AIRLOCK_BENCH_CHP="$PWD/$chp"
fi
AIRLOCK_BENCH_REPORT=1 AIRLOCK_TEST_USER=$(scripts/test-user.sh) \
  exec go test -count=1 -run '^TestGatewayReport$' -timeout 20m -v ./internal/gateway/
