// Package debpkg holds the test of airlock's Debian package (make deb,
// scripts/build-deb.sh): built, installed on this machine with dpkg -i,
// its configuration checked and its gateway started as the unit starts it
// (systemd does not run here), a desktop launched, and the package purged
// without a trace. The package has no code of its own.
package debpkg
