package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/store"
)

// termsHash names a text of terms: what an acceptance is of, so a changed
// text asks again.
func termsHash(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:])
}

// termsProfile is the profile called name if id may launch it and it has
// terms; 404 otherwise.
func (g *Gateway) termsProfile(id identity, name string) (Profile, error) {
	p, ok := g.profile(name)
	if !ok || !p.allows(id.groups) || p.Terms == "" {
		return Profile{}, apiErr(404, "not_found", fmt.Sprintf("profile %q has no terms of use for you", name))
	}
	return p, nil
}

// accepted reports whether id accepted p's terms as they are now, and
// whether they accepted an older text.
func (g *Gateway) accepted(ctx context.Context, id identity, p Profile) (ok, changed bool, err error) {
	h, err := g.cfg.Store.TermsAccepted(ctx, id.user, p.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, false, nil
	case err != nil:
		return false, false, storeFault("terms lookup", err)
	}
	cur := termsHash(p.Terms)
	return h == cur, h != cur, nil
}

// termsAccepted refuses a launch of a profile whose terms id has not
// accepted as they are now, pointing at them.
func (g *Gateway) termsAccepted(ctx context.Context, id identity, name string) error {
	p, ok := g.profile(name)
	if !ok || p.Terms == "" {
		return nil
	}
	ok, changed, err := g.accepted(ctx, id, p)
	switch {
	case err != nil:
		return err
	case ok:
		return nil
	}
	why := "accept its terms of use first"
	if changed {
		why = "its terms of use changed; accept them again"
	}
	return apiErr(409, "terms_not_accepted", fmt.Sprintf("profile %q: %s: /terms/%s (API: GET and POST /api/v1/profiles/%s/terms)", name, why, name, name))
}

// accept records id's acceptance of p's terms whose hash the user was
// shown; a text changed since is refused, so nobody accepts unseen text.
func (g *Gateway) accept(r *http.Request, id identity, p Profile, hash string) error {
	if hash != termsHash(p.Terms) {
		return apiErr(409, "terms_changed", "the terms of use changed since you read them; read them again")
	}
	if err := g.cfg.Store.AcceptTerms(r.Context(), id.user, p.Name, hash, g.now()); err != nil {
		return storeFault("record terms", err)
	}
	g.audit(r.Context(), id.user, "terms_accept", "", r.RemoteAddr, p.Name+" sha256:"+hash)
	return nil
}

// getTerms: GET /api/v1/profiles/{name}/terms → text, hash, accepted.
func (g *Gateway) getTerms(w http.ResponseWriter, r *http.Request, id identity) error {
	p, err := g.termsProfile(id, r.PathValue("name"))
	if err != nil {
		return err
	}
	ok, _, err := g.accepted(r.Context(), id, p)
	if err != nil {
		return err
	}
	writeJSON(w, 200, map[string]any{"profile": p.Name, "text": p.Terms, "hash": termsHash(p.Terms), "accepted": ok})
	return nil
}

// acceptTermsAPI: POST /api/v1/profiles/{name}/terms {"hash": "..."}.
func (g *Gateway) acceptTermsAPI(w http.ResponseWriter, r *http.Request, id identity) error {
	p, err := g.termsProfile(id, r.PathValue("name"))
	if err != nil {
		return err
	}
	var body struct {
		Hash string `json:"hash"`
	}
	if err := readJSON(w, r, &body, false); err != nil {
		return err
	}
	if err := g.accept(r, id, p, body.Hash); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// termsPage shows a profile's terms with the form accepting them.
func (g *Gateway) termsPage(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	p, err := g.termsProfile(id, r.PathValue("name"))
	if err != nil {
		return err
	}
	_, changed, err := g.accepted(r.Context(), id, p)
	if err != nil {
		return err
	}
	return g.cfg.Portal.Terms(w, portal.TermsPage{Base: portal.Base{Title: "Terms of use", User: id.user, Admin: id.admin},
		Profile: p.Name, ProfileTitle: p.Title, Text: p.Terms, Hash: termsHash(p.Terms), Changed: changed})
}

// termsPost accepts from the portal's form. POST /terms/{name}.
func (g *Gateway) termsPost(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	if !id.cookie {
		return apiErr(403, "forbidden", "accept terms from the portal or the API")
	}
	p, err := g.termsProfile(id, r.PathValue("name"))
	if err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		return apiErr(400, "bad_request", "bad form")
	}
	if err := g.accept(r, id, p, r.PostForm.Get("hash")); err != nil {
		return err
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}
