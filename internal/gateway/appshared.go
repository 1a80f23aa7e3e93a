package gateway

// App sign-in across several gateways (issue 18). Behind a balancer a
// browser's connections to the gateway and to an app host land on any
// gateway: the code one mints is spent at another, and the cookie one
// sets is shown to another. On a store several gateways share, the code
// is a handoff in the store (spent once across them all), and the cookie
// carries its grant sealed under a key derived from the master key. A
// gateway that does not hold a cookie opens its seal and checks the rights
// it came by again (recheck.refused: the session ready, the share link,
// the login or token, the user) before taking it, so a cookie dropped by a
// revocation does not come back from its seal.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
)

// sealedCookiePrefix marks an app cookie that carries its sealed grant.
const sealedCookiePrefix = "s1."

// grantWire is an appGrant as sealed in a code's handoff or a cookie.
type grantWire struct {
	Session   string       `json:"s"`
	Owner     string       `json:"o"`
	User      string       `json:"u"`
	Share     string       `json:"sh,omitempty"`
	Login     string       `json:"l,omitempty"`
	Token     string       `json:"t,omitempty"`
	Mode      session.Mode `json:"m"`
	Expires   time.Time    `json:"e,omitzero"`
	Proof     []byte       `json:"p,omitempty"`
	ShareHash []byte       `json:"h,omitempty"`
	Connector string       `json:"c"`
	Created   time.Time    `json:"cr"`
}

func wireOf(gr appGrant) grantWire {
	t := gr.viewerTag
	return grantWire{Session: t.Session, Owner: t.Owner, User: t.User, Share: t.Share, Login: t.Login, Token: t.Token,
		Mode: t.Mode, Expires: t.Expires, Proof: t.proof, ShareHash: t.shareHash, Connector: gr.connector, Created: gr.created}
}

func (w grantWire) grant() appGrant {
	return appGrant{viewerTag: viewerTag{Session: w.Session, Owner: w.Owner, User: w.User, Share: w.Share, Login: w.Login, Token: w.Token,
		Mode: w.Mode, Expires: w.Expires, proof: w.Proof, shareHash: w.ShareHash}, connector: w.Connector, created: w.Created}
}

// sharedAppAuth reports whether app codes and cookies must hold across
// several gateways.
func (g *Gateway) sharedAppAuth() bool { return g.lease.shared() && g.handoffs != nil }

func (g *Gateway) appSealKey() []byte {
	k := derive(g.master, "airlock app grant seal", "")
	return k[:]
}

func (g *Gateway) sealGrant(name string, gr appGrant) ([]byte, error) {
	b, err := json.Marshal(wireOf(gr))
	if err != nil {
		return nil, fmt.Errorf("seal app grant: %w", err)
	}
	return sealSecret(g.appSealKey(), name, b), nil
}

func (g *Gateway) openGrant(name string, sealed []byte) (appGrant, error) {
	if !strings.HasPrefix(string(sealed), sealedPrefix) {
		return appGrant{}, errors.New("open app grant: not sealed")
	}
	b, err := openSecret(g.appSealKey(), name, sealed)
	if err != nil {
		return appGrant{}, fmt.Errorf("open app grant: %w", err)
	}
	var w grantWire
	if err := json.Unmarshal(b, &w); err != nil {
		return appGrant{}, fmt.Errorf("open app grant: %w", err)
	}
	return w.grant(), nil
}

func appCodeKey(pub string) []byte {
	k := sha256.Sum256([]byte("app code\x00" + pub))
	return k[:]
}

// mintShared is appAuth.mint on the shared store: the code's grant waits
// in a handoff bound to the hash of the code's secret.
func (g *Gateway) mintShared(ctx context.Context, gr appGrant) (string, error) {
	pub, secret := randomToken(9), randomToken(24)
	v, err := g.sealGrant("app code", gr)
	if err != nil {
		return "", err
	}
	bind := sha256.Sum256([]byte(secret))
	if err := g.handoffs.PutHandoff(ctx, appCodeKey(pub), bind[:], v, gr.created, gr.created.Add(appCodeTTL)); err != nil {
		return "", storeFault("keep an app sign-in code", err)
	}
	return pub + "." + secret, nil
}

// redeemShared is appAuth.redeem on the shared store. A wrong secret
// spends nothing; an expired code is gone from the store, and unknown.
func (g *Gateway) redeemShared(ctx context.Context, code, id string, now time.Time) (appGrant, error) {
	pub, secret, ok := strings.Cut(code, ".")
	if !ok || pub == "" || len(code) > 256 {
		return appGrant{}, errCodeUnknown
	}
	bind := sha256.Sum256([]byte(secret))
	v, found, mine, err := g.handoffs.TakeHandoff(ctx, appCodeKey(pub), bind[:], now)
	if err != nil {
		return appGrant{}, storeFault("spend an app sign-in code", err)
	}
	if !found || !mine {
		return appGrant{}, errCodeUnknown
	}
	gr, err := g.openGrant("app code", v)
	if err != nil {
		g.log.ErrorContext(ctx, "app sign-in code does not open", "session", id, "error", err)
		return appGrant{}, errCodeUnknown
	}
	switch {
	case !now.Before(gr.created.Add(appCodeTTL)):
		return appGrant{}, errCodeExpired
	case gr.Session != id:
		return appGrant{}, errCodeHost
	}
	return gr, nil
}

// sealAppCookie is the value of an app cookie carrying gr.
func (g *Gateway) sealAppCookie(gr appGrant) (string, error) {
	v, err := g.sealGrant("app cookie", gr)
	if err != nil {
		return "", err
	}
	return sealedCookiePrefix + base64.RawURLEncoding.EncodeToString(v), nil
}

// openAppCookie is the grant a sealed app cookie carries.
func (g *Gateway) openAppCookie(value string) (appGrant, error) {
	enc, ok := strings.CutPrefix(value, sealedCookiePrefix)
	if !ok {
		return appGrant{}, errors.New("not a sealed app cookie")
	}
	if len(enc) > 4096 {
		return appGrant{}, fmt.Errorf("sealed app cookie of %d bytes", len(enc))
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return appGrant{}, fmt.Errorf("sealed app cookie: %w", err)
	}
	return g.openGrant("app cookie", b)
}

// adoptAppCookie takes a sealed app cookie this gateway does not hold, for
// session id's host, if its seal opens, it is unexpired and the rights it
// came by still hold. A store that cannot say whether they hold is a
// store fault (try again): not a yes, as a revoked cookie would be let in
// while the store is down, nor a no, which would send the visitor to sign
// in again.
func (g *Gateway) adoptAppCookie(ctx context.Context, value, id string) (appGrant, bool, error) {
	if !strings.HasPrefix(value, sealedCookiePrefix) {
		return appGrant{}, false, nil
	}
	gr, err := g.openAppCookie(value)
	if err != nil {
		g.log.WarnContext(ctx, "refused: an app cookie that does not open", "session", id, "error", err)
		return appGrant{}, false, nil
	}
	now := g.now()
	if gr.Session != id || !now.Before(gr.Expires) || g.appAuth.wasRefused(value, now) {
		return appGrant{}, false, nil
	}
	rc := recheck{g: g, ctx: ctx, seen: map[string]string{}, strict: true}
	if why := rc.refused(gr.viewerTag); why != "" {
		if rc.fault != nil {
			g.log.ErrorContext(ctx, "app cookie not taken: the store does not answer", "session", id, "user", gr.User, "error", rc.fault)
			return appGrant{}, false, rc.fault
		}
		g.log.InfoContext(ctx, "app cookie not taken: "+why, "session", id, "user", gr.User, "share", gr.Share)
		if why != "session "+string(session.Queued) && why != "session "+string(session.Starting) {
			// Gone for good (a session not yet ready may become so).
			g.appAuth.refuse(value, gr.Expires)
		}
		return appGrant{}, false, nil
	}
	if err := g.appAuth.put(value, gr, now); err != nil {
		return appGrant{}, false, nil
	}
	return gr, true, nil
}
