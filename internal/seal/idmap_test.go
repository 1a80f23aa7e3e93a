package seal

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSubIDs(t *testing.T) {
	file := `# comment
alice:100000:65536
1001:300000:1000
bob:165536:65536
alice:bad:1
alice:5:0
alice:1:2:3
`
	got := ParseSubIDs(strings.NewReader(file), "alice", 1001)
	want := []IDRange{{100000, 65536}, {300000, 1000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := ParseSubIDs(strings.NewReader(file), "carol", 7); got != nil {
		t.Fatalf("carol: %v", got)
	}
}

// FuzzParseSubIDs: never panics; every range returned is positive and
// does not overflow 32-bit ids.
func FuzzParseSubIDs(f *testing.F) {
	f.Add("alice:100000:65536\n", "alice")
	f.Add("alice:4294967295:1\n", "alice")
	f.Add("::\n:1:1\n", "")
	f.Fuzz(func(t *testing.T, file, name string) {
		for _, r := range ParseSubIDs(strings.NewReader(file), name, -1) {
			if r.Start < 0 || r.Count <= 0 || int64(r.Start)+int64(r.Count) > 1<<32-1 {
				t.Fatalf("bad range %+v", r)
			}
		}
	})
}

// TestSubordinateMap: the owner's id maps to itself; the ids around it come
// from the subordinate range without overlap; the tty group (5) is inside.
func TestSubordinateMap(t *testing.T) {
	for _, c := range []struct {
		id   int
		r    IDRange
		want []idMapLine
	}{
		{1001, IDRange{100000, 65536}, []idMapLine{{0, 100000, 1001}, {1001, 1001, 1}, {1002, 101001, 64535}}},
		{0, IDRange{100000, 10}, []idMapLine{{0, 0, 1}, {1, 100000, 10}}},
		{70000, IDRange{100000, 65536}, []idMapLine{{0, 100000, 65536}, {70000, 70000, 1}}},
	} {
		got := SubordinateMap(c.id, c.r)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("SubordinateMap(%d, %v) = %v, want %v", c.id, c.r, got, c.want)
		}
		// No inside id and no outside id is used twice.
		in, out := map[int]bool{}, map[int]bool{}
		for _, l := range got {
			for i := range l.Count {
				if in[l.Inside+i] || out[l.Outside+i] {
					t.Fatalf("overlap in %v", got)
				}
				in[l.Inside+i], out[l.Outside+i] = true, true
			}
		}
	}
	if !mappedInside(5, 1001, IDRange{100000, 65536}) {
		t.Error("tty group 5 not mapped for a normal user")
	}
}
