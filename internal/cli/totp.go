package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/user"
	"time"

	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// usersTOTPReset removes a user's second factor from the store: for the
// host's administrator when no portal admin can (the only admin lost their
// phone and recovery codes). It works for LDAP users too, and is audited
// with the Unix account that ran it.
func usersTOTPReset(ctx context.Context, env *Env, cfg config.Config, name string) int {
	if name == "" {
		return fail(env, "users totp-reset: name a user")
	}
	// Not serve's "create": a wrong --state-dir must not make a store.
	db, err := openStore(ctx, cfg, slog.New(slog.DiscardHandler), false)
	if err != nil {
		return fail(env, "%v", err)
	}
	defer db.Close()
	switch _, err := db.GetTOTP(ctx, name); {
	case errors.Is(err, store.ErrNotFound):
		fmt.Fprintf(env.Stdout, "%s has no second factor\n", name)
		return 0
	case err != nil:
		return fail(env, "%v", err)
	}
	if err := db.DeleteTOTP(ctx, name); err != nil {
		return fail(env, "%v", err)
	}
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	if err := db.AppendAudit(ctx, session.AuditEvent{Time: time.Now(), Actor: actor, Action: "totp_remove", Detail: "of " + name + " by airlock users totp-reset"}); err != nil {
		return fail(env, "removed, but the audit event was not written: %v", err)
	}
	fmt.Fprintf(env.Stdout, "removed the second factor of %s; they may enrol again at their next login\n", name)
	return 0
}
