// Package anchorbench measures airlock's connectors against the programs
// they replace, side by side in one run: the vnc connector against
// websockify (plain and TLS), the tls connector against stunnel with
// required client certificates, and direct TCP and direct TLS as the floor.
// Every proxy, airlock's included, runs as its own process in front of one
// in-process TCP sink that streams, swallows or echoes, and every figure is
// also given as a ratio to the anchor measured in the same run.
//
// It is test-only: the benchmarks are `go test -run '^$' -bench .
// ./internal/anchorbench/`, and scripts/bench-anchors.sh runs
// TestAnchorReport, which writes the comparison to
// .artifacts/bench-anchors.md. BenchmarkInProcess runs connector.Serve
// inside the test binary instead, for `go test -cpuprofile`; with
// AIRLOCK_BENCH_HEAPPROFILE=DIR its idle case also writes a heap profile
// taken while 1,000 connections are open. AIRLOCK_BENCH_CONNECTOR_ENV adds
// NAME=value pairs to the environment of the connector processes, for
// experiments (GOMAXPROCS=1, GODEBUG=...); the script never sets it.
//
// # What it must not do
//
// It never changes what it measures: the connector runs as the real
// `airlock connector` binary with the flags a runner would pass, and the
// anchors run as their Debian packages ship them. It listens on 127.0.0.1
// or on UNIX sockets in a temporary directory only, every loop in it is
// bounded in time, and every process it starts is stopped, with its
// children, before the test binary exits.
package anchorbench
