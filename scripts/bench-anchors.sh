#!/usr/bin/env bash
# Measure airlock's connectors against the programs they replace
# (websockify, stunnel), side by side in one run, with direct TCP and TLS
# as the floor, and write the comparison to .artifacts/bench-anchors.md.
# Needs the Debian packages websockify and stunnel4. Takes about seven
# minutes on two cores; the targets it checks are in the report.
set -euo pipefail
cd "$(dirname "$0")/.."
for prog in websockify stunnel4; do
  if ! command -v "$prog" >/dev/null; then
    echo "bench-anchors: $prog not installed (apt-get install -y --no-install-recommends websockify stunnel4)" >&2
    exit 1
  fi
done
AIRLOCK_BENCH_REPORT=1 exec go test -count=1 -run '^TestAnchorReport$' -timeout 30m -v ./internal/anchorbench/
