module github.com/airlock-hpc/airlock

go 1.26.8

require (
	github.com/coder/websocket v1.8.15
	golang.org/x/sys v0.49.0
)
