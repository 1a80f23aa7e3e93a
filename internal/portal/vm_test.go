package portal

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestKeepDiskOption: the launch form offers to keep the disk only for a
// vm profile that allows it; the option starts hidden when the first
// profile does not.
func TestKeepDiskOption(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	v := homePage()
	v.Profiles = append(v.Profiles, Profile{Name: "win", Kind: "vm", CPUs: 2, MemoryMB: 4096, KeepDisk: true})
	w := httptest.NewRecorder()
	if err := p.Home(w, v); err != nil {
		t.Fatal(err)
	}
	body := w.Body.String()
	if n := strings.Count(body, `data-keep-disk="true"`); n != 1 {
		t.Errorf("%d profiles offer to keep the disk, want 1", n)
	}
	if !strings.Contains(body, `id="keep-disk-row" hidden`) {
		t.Error("the keep-disk option shows for a desktop profile")
	}
}
