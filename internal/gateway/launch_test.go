package gateway

import (
	"errors"
	"testing"
	"time"
)

// TestCheckLaunch: each rule of a launch request against its profile, with
// no store, backend or node behind it.
func TestCheckLaunch(t *testing.T) {
	no := false
	p := Profile{Name: "d", Kind: "desktop", CPUs: 1, MaxCPUs: 4, MemoryMB: 2048, MaxMemoryMB: 8192,
		Lifetime: 8 * time.Hour, MaxLifetime: 24 * time.Hour}
	unbounded := Profile{Name: "u", Kind: "app", CPUs: 2, MemoryMB: 512}
	vmKeep := Profile{Name: "v", Kind: "vm", VM: &VMImage{Name: "w", PersistentAllowed: true}}
	vmNoKeep := Profile{Name: "v", Kind: "vm", VM: &VMImage{Name: "w"}}
	for _, tc := range []struct {
		name string
		p    Profile
		req  LaunchRequest
		want launchGrant
		code string // the refusal's code; "" granted
	}{
		{"defaults", p, LaunchRequest{}, launchGrant{CPUs: 1, MemoryMB: 2048, Lifetime: 8 * time.Hour, Persistent: true}, ""},
		{"asks within", p, LaunchRequest{CPUs: 4, MemoryMB: 8192, Lifetime: "24h", Persistent: &no},
			launchGrant{CPUs: 4, MemoryMB: 8192, Lifetime: 24 * time.Hour}, ""},
		{"cpus over", p, LaunchRequest{CPUs: 5}, launchGrant{}, "over_limit"},
		{"cpus negative", p, LaunchRequest{CPUs: -1}, launchGrant{}, "over_limit"},
		{"memory over", p, LaunchRequest{MemoryMB: 8193}, launchGrant{}, "over_limit"},
		{"memory under 64", p, LaunchRequest{MemoryMB: 63}, launchGrant{}, "over_limit"},
		{"lifetime over", p, LaunchRequest{Lifetime: "25h"}, launchGrant{}, "over_limit"},
		{"lifetime not a duration", p, LaunchRequest{Lifetime: "tomorrow"}, launchGrant{}, "bad_request"},
		{"lifetime zero", p, LaunchRequest{Lifetime: "0s"}, launchGrant{}, "bad_request"},
		{"lifetime negative", p, LaunchRequest{Lifetime: "-1h"}, launchGrant{}, "bad_request"},
		{"no maximum", unbounded, LaunchRequest{CPUs: 64, MemoryMB: 1 << 20, Lifetime: "1000h"},
			launchGrant{CPUs: 64, MemoryMB: 1 << 20, Lifetime: 1000 * time.Hour, Persistent: true}, ""},
		{"keep_disk allowed", vmKeep, LaunchRequest{KeepDisk: true}, launchGrant{Persistent: true}, ""},
		{"keep_disk refused by the image", vmNoKeep, LaunchRequest{KeepDisk: true}, launchGrant{}, "not_allowed"},
		{"keep_disk on a desktop", p, LaunchRequest{KeepDisk: true}, launchGrant{}, "not_allowed"},
	} {
		got, err := checkLaunch(tc.p, tc.req)
		if tc.code != "" {
			ae, ok := errors.AsType[*apiError](err)
			if !ok || ae.Code != tc.code || ae.Status != 400 {
				t.Errorf("%s: error %v, want a 400 %s", tc.name, err, tc.code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}
