package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// readyNote is an e-mail owed when a session becomes ready ("I would like
// to receive an email when the session starts").
type readyNote struct {
	to, user, link string
}

// readyMails are the notes owed, by session id. In memory: a gateway
// restarted while a session waits in the queue sends none for it.
type readyMails struct {
	m sync.Map // id → readyNote
}

// wantReadyMail checks that user may be e-mailed (a relay, an address)
// before their launch is made.
func (g *Gateway) wantReadyMail(ctx context.Context, user string) (string, error) {
	if g.cfg.Mailer == nil {
		return "", apiErr(400, "no_mail", "this gateway sends no e-mail (no mail relay is configured)")
	}
	u, err := g.cfg.Store.GetUser(ctx, user)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", apiErr(400, "no_mail", "no e-mail address is known for you")
	case err != nil:
		return "", storeFault("user lookup", err)
	case u.Email == "":
		return "", apiErr(400, "no_mail", "no e-mail address is known for you: it comes from a single sign-on or e-mail login")
	}
	return u.Email, nil
}

// oweReadyMail notes that s's owner is to be e-mailed at to when s is
// ready; if it already is (a fast local start), the mail goes now.
func (g *Gateway) oweReadyMail(ctx context.Context, s *session.Session, to, base string) {
	g.readyMails.m.Store(s.ID, readyNote{to: to, user: s.Owner, link: base + "/sessions/" + s.ID})
	if cur, err := g.cfg.Store.GetSession(ctx, s.ID); err == nil {
		g.sessionChanged(cur)
	}
}

// sessionChanged sends the note owed for s once it is ready, and forgets
// it if s ended first.
func (g *Gateway) sessionChanged(s *session.Session) {
	switch s.State {
	case session.Ready:
		v, ok := g.readyMails.m.LoadAndDelete(s.ID)
		if !ok {
			return
		}
		n := v.(readyNote)
		body := fmt.Sprintf("Your airlock session %s (%s) is ready:\n\n%s\n\nIt ends at %s unless you stop it earlier.\n",
			s.ID, s.Profile, n.link, s.Ends().UTC().Format("2006-01-02 15:04 MST"))
		if g.queueMail(mailJob{to: n.to, subject: "Your airlock session " + s.ID + " is ready", body: body, what: "ready mail for " + s.ID}) {
			g.audit(g.ctx, n.user, "ready_mail", s.ID, "", n.to)
		}
	case session.Ended:
		g.readyMails.m.Delete(s.ID)
	}
}
