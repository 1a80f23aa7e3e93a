//go:build !windows

package rdpclient

import "errors"

// sealPassword: outside Windows no RDP client reads a password from an
// .rdp file (mstsc's "password 51:b:" is DPAPI, Windows only), and a
// clear one would sit in a file for as long as the client runs.
func sealPassword(string) (string, error) {
	return "", errors.New("no way to seal a password in an .rdp file on this system")
}
