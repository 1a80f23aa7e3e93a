// Command airlock runs sealed desktop, VM and web-app sessions and the
// connectors that are the only way into them. main only wires: every
// subcommand lives in internal/cli.
package main

import (
	"context"
	"os"

	"github.com/airlock-hpc/airlock/internal/cli"
)

func main() {
	// Each subcommand installs the signal handling it needs: the runner
	// counts SIGTERMs (the second one kills), the seal's init forwards them.
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
