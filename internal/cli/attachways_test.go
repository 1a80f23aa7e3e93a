package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAttachWaysLines: the ways file keeps only a plain word and a place
// on the session's own page per line; a way elsewhere (another origin, a
// path beside the page), with a shell or HTML metacharacter, or with a
// name that is not a word is dropped, so after.sh and the card read
// nothing the gateway's answer could smuggle in.
func TestAttachWaysLines(t *testing.T) {
	var ans attachAnswer
	err := json.Unmarshal([]byte(`{"id":"s-1","url":"https://gw.example/sessions/s-1","ways":[
		{"name":"desktop","url":"https://gw.example/sessions/s-1"},
		{"name":"rdp","url":"https://gw.example/sessions/s-1#rdp"},
		{"name":"console","url":"https://evil.example/#console"},
		{"name":"app","url":"https://gw.example/sessions/s-10"},
		{"name":"x y","url":"https://gw.example/sessions/s-1#x"},
		{"name":"rdp","url":"https://gw.example/sessions/s-1#\"><script>"},
		{"name":"rdp","url":"https://gw.example/sessions/s-1#$(id)"},
		{"name":"rdp","url":"https://gw.example/sessions/s-1#a\nb"}]}`), &ans)
	if err != nil {
		t.Fatal(err)
	}
	want := "desktop https://gw.example/sessions/s-1\nrdp https://gw.example/sessions/s-1#rdp\n"
	if got := waysLines(&ans); got != want {
		t.Errorf("ways file:\n%s\nwant:\n%s", got, want)
	}
}

// FuzzWaysLines: whatever the gateway answers, every line of the ways
// file is a lowercase word, one space and the session's page or a
// fragment of it, with nothing a shell or HTML would read as syntax.
func FuzzWaysLines(f *testing.F) {
	f.Add("https://gw.example/sessions/s-1", "rdp", "https://gw.example/sessions/s-1#rdp")
	f.Add("https://gw.example/sessions/s-1", "console", "https://gw.example/sessions/s-1#console\n")
	f.Fuzz(func(t *testing.T, page, name, url string) {
		if strings.ContainsAny(page, " \t\r\n\"'<>\\`$") {
			return // the page itself is checked by after.sh and the card
		}
		ans := attachAnswer{URL: page}
		ans.Ways = append(ans.Ways, struct {
			Name string `json:"name"`
			URL  string `json:"url"`
		}{name, url})
		for _, line := range strings.Split(strings.TrimSuffix(waysLines(&ans), "\n"), "\n") {
			if line == "" {
				continue
			}
			n, u, ok := strings.Cut(line, " ")
			if !ok || n == "" || strings.Trim(n, "abcdefghijklmnopqrstuvwxyz") != "" {
				t.Fatalf("line %q: name", line)
			}
			if u != page && !strings.HasPrefix(u, page+"#") || strings.ContainsAny(u, " \t\r\n\"'<>\\`$") {
				t.Fatalf("line %q: url", line)
			}
		}
	})
}
