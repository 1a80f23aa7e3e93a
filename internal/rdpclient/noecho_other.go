//go:build !linux

package rdpclient

import "io"

// noEcho leaves the terminal as it is: only Linux turns echo off for the
// password (see noecho_linux.go).
func noEcho(io.Reader) (restore func()) { return func() {} }
