package gateway

import (
	"net/http"
	"testing"

	"github.com/airlock-hpc/airlock/internal/session"
)

// TestAdminAPIRefusesOtherSites: a page on a user's app host is same-site
// with the gateway, so the admin's login cookie (SameSite=Lax) goes with
// every GET it makes the admin's browser send (an <img>, a no-cors fetch),
// and CORS only stops it reading the answer. Such GETs made the gateway
// write "recording_fetched" audit records in the admin's name that the
// admin never asked for, stream whole recordings and build the largest
// pointer tracks in memory, as often as the page liked. The admin API
// answers a browser's cookie only from the gateway's own pages, or a
// URL typed (Sec-Fetch-Site none); scripts with a token are unaffected.
func TestAdminAPIRefusesOtherSites(t *testing.T) {
	tg := startGateway(t, "", nil, "admin")
	w, name, err := tg.g.startRecording(&session.Session{ID: "s-0123456789ab"}, "console", "alice")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("RFB 003.008\n"))
	w.Pointer(1, 2, 0)
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	admin := tg.client().loginCookie("admin")
	token := tg.client().loginToken("admin")
	for _, path := range []string{
		"/api/v1/admin/recordings",
		"/api/v1/admin/recordings/s-0123456789ab/" + name,
		"/api/v1/admin/recordings/s-0123456789ab/" + name + "/pointer",
		"/api/v1/admin/sessions",
	} {
		for site, want := range map[string]int{"same-site": 403, "cross-site": 403, "same-origin": 200, "none": 200} {
			req, _ := http.NewRequest("GET", tg.url+path, nil)
			req.Header.Set("Sec-Fetch-Site", site)
			resp, err := admin.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s with the admin's cookie, Sec-Fetch-Site %s: %d, want %d", path, site, resp.StatusCode, want)
			}
		}
		if code, body := token.do("GET", path, nil, nil); code != 200 {
			t.Errorf("GET %s with the admin's token: %d %s", path, code, body)
		}
	}
}
