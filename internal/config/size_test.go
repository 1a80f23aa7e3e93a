package config

import (
	"math"
	"testing"
)

var sizeTests = []struct {
	in   string
	want Size
	ok   bool
}{
	{"0", 0, true},
	{"512M", 512 * MiB, true},
	{"2G", 2 * GiB, true},
	{"2048M", 2 * GiB, true},
	{"1T", TiB, true},
	{"1K", KiB, true},
	{"100B", 100, true},
	{"0G", 0, true},
	{"8388607T", 8388607 * TiB, true},
	{"9223372036854775807B", math.MaxInt64, true},
	{"8388608T", 0, false},
	{"9223372036854775808B", 0, false},
	{"", 0, false},
	{"2", 0, false},
	{"512", 0, false},
	{"2g", 0, false},
	{"2GB", 0, false},
	{"2Gi", 0, false},
	{"2 G", 0, false},
	{" 2G", 0, false},
	{"-1G", 0, false},
	{"+1G", 0, false},
	{"1.5G", 0, false},
	{"G", 0, false},
	{"0x10M", 0, false},
	{"1_000M", 0, false},
}

func TestParseSize(t *testing.T) {
	for _, tc := range sizeTests {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, ok %v", tc.in, int64(got), err, int64(tc.want), tc.ok)
		}
	}
}

func TestSizeString(t *testing.T) {
	for s, want := range map[Size]string{
		0: "0", 1: "1B", KiB: "1K", 1536 * MiB: "1536M", 2 * GiB: "2G", 3 * TiB: "3T",
		1025: "1025B", -GiB: "-1G", math.MaxInt64: "9223372036854775807B",
		math.MinInt64: "-9223372036854775808B",
	} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
	if got := (2*GiB + 5).MiB(); got != 2048 {
		t.Errorf("MiB() = %d", got)
	}
}

// FuzzParseSize checks that ParseSize never panics, that what it accepts
// String writes back to the same size, and that String's output is
// always accepted for sizes that are not negative.
func FuzzParseSize(f *testing.F) {
	for _, tc := range sizeTests {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		z, err := ParseSize(s)
		if err != nil {
			if z != 0 {
				t.Fatalf("ParseSize(%q) = %d with error %v", s, z, err)
			}
			return
		}
		if z < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, z)
		}
		back, err := ParseSize(z.String())
		if err != nil || back != z {
			t.Fatalf("ParseSize(%q) = %d, written %q, read back %d, %v", s, z, z.String(), back, err)
		}
		if len(z.String()) > len(s) {
			t.Fatalf("String of ParseSize(%q) is %q, longer", s, z.String())
		}
	})
}
