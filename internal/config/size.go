package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Size is an amount of memory in bytes. In the file it is written as a
// whole number and a unit: B, K, M, G or T, each 1024 times the one before
// ("512M", "2G", "1T"). Zero may be written "0". A number without a unit is
// refused, because Slurm reads a bare number as megabytes and others read
// it as bytes.
type Size int64

// The units of Size.
const (
	Byte Size = 1
	KiB       = 1024 * Byte
	MiB       = 1024 * KiB
	GiB       = 1024 * MiB
	TiB       = 1024 * GiB
)

var sizeUnits = []struct {
	suffix byte
	size   Size
}{{'T', TiB}, {'G', GiB}, {'M', MiB}, {'K', KiB}, {'B', Byte}}

// ParseSize reads a size as written in the file. It accepts exactly what
// Size.String writes, and the same amount with a smaller unit ("2048M").
func ParseSize(s string) (Size, error) {
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, errors.New("empty")
	}
	n := 0
	for n < len(s) && '0' <= s[n] && s[n] <= '9' {
		n++
	}
	if n == 0 {
		return 0, errors.New("must start with a whole number of units, e.g. 512M or 2G")
	}
	digits, unit := s[:n], s[n:]
	if unit == "" {
		return 0, errors.New("no unit: write B, K, M, G or T after the number (powers of 1024), e.g. 512M")
	}
	if unit[0] == '.' || unit[0] == ',' {
		return 0, errors.New("not a whole number; use a smaller unit (1536M, not 1.5G)")
	}
	var mult Size
	if len(unit) == 1 {
		for _, u := range sizeUnits {
			if unit[0] == u.suffix {
				mult = u.size
			}
		}
	}
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q: use B, K, M, G or T (powers of 1024)", unit)
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || v > math.MaxInt64/int64(mult) {
		return 0, errors.New("too large")
	}
	return Size(v) * mult, nil
}

// String writes s with the largest unit that divides it exactly ("2G",
// "1536M", "0"). A negative size, which ParseSize never returns, is written
// with a sign that ParseSize refuses.
func (s Size) String() string {
	if s == 0 {
		return "0"
	}
	sign, v := "", s
	if s < 0 {
		if s == math.MinInt64 {
			return strconv.FormatInt(int64(s), 10) + "B"
		}
		sign, v = "-", -s
	}
	for _, u := range sizeUnits {
		if v%u.size == 0 {
			return sign + strconv.FormatInt(int64(v/u.size), 10) + string(u.suffix)
		}
	}
	panic("unreachable")
}

// MiB is s in whole mebibytes, rounded down.
func (s Size) MiB() int64 { return int64(s / MiB) }
