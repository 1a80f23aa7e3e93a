// Command airlock-client is the user's side of airlock alone (`airlock rdp`
// and `airlock login`), for Linux, macOS and Windows: `make release` builds
// it as airlock-OS-ARCH. On Linux the full airlock binary has the same
// subcommands.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/airlock-hpc/airlock/internal/rdpclient"
)

func main() {
	ctx := context.Background()
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: airlock rdp FILE.airlock | SESSION\n       airlock login https://GATEWAY")
		os.Exit(2)
	}
	switch args[0] {
	case "rdp":
		os.Exit(rdpclient.CmdRDP(ctx, args[1:], os.Stdout, os.Stderr))
	case "login":
		os.Exit(rdpclient.CmdLogin(ctx, args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	fmt.Fprintf(os.Stderr, "airlock: unknown command %q (this client has rdp and login)\n", args[0])
	os.Exit(2)
}
