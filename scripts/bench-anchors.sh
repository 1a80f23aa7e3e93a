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
# Native RDP (issue 11): the whole path, airlock rdp's tunnel → the
# gateway's RDP port → the tls connector → an echo target, against a
# stunnel client and a stunnel server with client certificates, in one run.
# Target: at least stunnel-to-stunnel's throughput, a p50 no worse than 1.2×.
mkdir -p .artifacts
{
  echo
  echo "## Native RDP path: airlock rdp → gateway → tls connector, against stunnel → stunnel"
  echo
  echo '```'
  AIRLOCK_TEST_USER=$(scripts/test-user.sh) go test -count=1 -run '^$' -bench 'BenchmarkRDPPath' -benchtime 3s ./internal/gateway/ 2>&1 | grep -E '^(Benchmark|goos|cpu)'
  echo '```'
} | tee -a .artifacts/bench-anchors.md
# Browser RDP (issue 12): a WebSocket to /rdp/ID (RDCleanPath, the channel
# filter on every client frame) → the tls connector → an RDP server
# stand-in doing TLS, against the native path's tls connector and direct
# TCP, in one run. guacd is not packaged in Debian 12, so its published
# figures are in ../shared/anchors.md §4 only.
{
  echo
  echo "## Browser RDP path: RDCleanPath WebSocket → gateway → tls connector, against the tls connector path and direct TCP"
  echo
  echo '```'
  AIRLOCK_TEST_USER=$(scripts/test-user.sh) go test -count=1 -run '^$' -bench 'BenchmarkRDPWebPath' -benchtime 3s ./internal/gateway/ 2>&1 | grep -E '^(Benchmark|goos|cpu)'
  echo '```'
} | tee -a .artifacts/bench-anchors.md
# Browser RDP, a busy desktop (an xterm listing /usr without pause) shown
# in headless Chromium for 30 s: CPU seconds per session-minute of the
# gateway and the tls connector. Target: together at most a tenth of
# Guacamole's published 0.26 CPU per scrolling session (0.026).
{
  echo
  echo "## Browser RDP, busy desktop: CPU of the gateway and the connector"
  echo
  echo '```'
  AIRLOCK_BENCH_REPORT=1 AIRLOCK_TEST_USER=$(scripts/test-user.sh) go test -count=1 -run '^TestRDPWebBusyDesktopReport$' -v ./internal/gateway/ 2>&1 | grep -E '^RDPWEB-BUSY'
  echo '```'
} | tee -a .artifacts/bench-anchors.md
