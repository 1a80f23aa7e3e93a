package cli

import (
	"context"

	"github.com/airlock-hpc/airlock/internal/rdpclient"
)

func cmdRDP(ctx context.Context, env *Env, args []string) int {
	return rdpclient.CmdRDP(ctx, args, env.Stdout, env.Stderr)
}

func cmdLogin(ctx context.Context, env *Env, args []string) int {
	return rdpclient.CmdLogin(ctx, args, env.Stdin, env.Stdout, env.Stderr)
}
