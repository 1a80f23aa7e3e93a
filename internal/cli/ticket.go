package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

func cmdTicket(_ context.Context, env *Env, args []string) int {
	fs := newFlags(env, "ticket", "--key-file K --session S --connector C --user U [--view] [--ttl 60s]")
	keyFile := fs.String("key-file", "", "file holding the session's 32-byte ticket key (raw or hex). Required.")
	session := fs.String("session", "", "session id the ticket is for. Required.")
	conn := fs.String("connector", "", "connector name the ticket is for. Required.")
	user := fs.String("user", "", "user the ticket is issued to (logged by the connector). Required.")
	view := fs.Bool("view", false, "view-only ticket: the connector drops the holder's keyboard, mouse and clipboard input")
	ttl := fs.Duration("ttl", 60*time.Second, "how long the ticket may be used to start a connection")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *keyFile == "" || *session == "" || *conn == "" || *user == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *ttl <= 0 || *ttl > 24*time.Hour {
		return fail(env, "--ttl %s: want more than 0 and at most 24h", *ttl)
	}
	key, err := ticket.LoadKey(*keyFile)
	if err != nil {
		return fail(env, "%v", err)
	}
	mode := ticket.Control
	if *view {
		mode = ticket.View
	}
	tok, err := ticket.Sign(key, ticket.Claims{Session: *session, Connector: *conn, User: *user, Mode: mode, Expires: time.Now().Add(*ttl)})
	if err != nil {
		return fail(env, "%v", err)
	}
	fmt.Fprintln(env.Stdout, tok)
	return 0
}
