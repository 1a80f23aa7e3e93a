package runner

import (
	"testing"
)

// TestUnixDatagramOnlyForWindowsShare: the unix guard's exception for
// UNIX datagram sockets (smbd needs them) goes to a Windows VM with a
// shared folder and to no other session, where a datagram could be sent
// to any host socket's path.
func TestUnixDatagramOnlyForWindowsShare(t *testing.T) {
	share := &VMShare{Path: "/home/alice"}
	for _, c := range []struct {
		name string
		vm   *VMSpec
		want bool
	}{
		{"no vm", nil, false},
		{"linux vm with a share", &VMSpec{OS: "linux", Share: share}, false},
		{"other vm with a share", &VMSpec{OS: "other", Share: share}, false},
		{"windows vm without a share", &VMSpec{OS: "windows"}, false},
		{"windows vm with a share", &VMSpec{OS: "windows", Share: share}, true},
	} {
		r := &run{spec: &Spec{ID: "s", VM: c.vm, Workload: Command{Argv: []string{"true"}}}}
		if got := r.sealConfig(t.Context(), &setup{scratch: "/x"}).UnixDatagram; got != c.want {
			t.Errorf("%s: UnixDatagram %v, want %v", c.name, got, c.want)
		}
	}
}
