//go:build race

package connector

// raceEnabled reports whether the test binary was built with -race.
const raceEnabled = true
