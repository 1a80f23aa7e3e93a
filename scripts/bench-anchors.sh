#!/usr/bin/env bash
# Measure airlock's connectors against the programs they replace
# (websockify, stunnel), side by side in one run, with direct TCP and TLS
# as the floor, and write the comparison to .artifacts/bench-anchors.md.
# Needs the Debian packages websockify and stunnel4. Takes about seven
# minutes on two cores; the targets it checks are in the report.
#
# `scripts/bench-anchors.sh --baseline REV` also builds airlock at git
# revision REV and measures its connectors in the same rounds, each beside
# this tree's (rows `…-baseline`, ratio "baseline ÷ this tree"), so a
# change's cost is read from one run, not from two runs on a noisy machine.
set -euo pipefail
cd "$(dirname "$0")/.."
for prog in websockify stunnel4; do
  if ! command -v "$prog" >/dev/null; then
    echo "bench-anchors: $prog not installed (apt-get install -y --no-install-recommends websockify stunnel4)" >&2
    exit 1
  fi
done
if [ "${1:-}" = --baseline ]; then
  rev=${2:?usage: scripts/bench-anchors.sh [--baseline REV]}
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  git archive "$rev" | tar -x -C "$tmp"
  # The web assets are built, not tracked; the connectors do not use them.
  [ -d internal/portal/static/vendor ] && cp -r internal/portal/static/vendor "$tmp/internal/portal/static/"
  (cd "$tmp" && CGO_ENABLED=0 go build -trimpath -o "$tmp/airlock" ./cmd/airlock)
  export AIRLOCK_BENCH_BASELINE=$tmp/airlock
fi
AIRLOCK_BENCH_REPORT=1 go test -count=1 -run '^TestAnchorReport$' -timeout 30m -v ./internal/anchorbench/
