package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error names the
// file, and that a config it accepts, written out with YAML, reads back
// equal.
func FuzzParse(f *testing.F) {
	f.Add(DefaultsYAML())
	files, _ := filepath.Glob("testdata/check/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 || len(es) > maxReported+1 {
				t.Fatalf("error %T with %d problems: %v", err, len(es), err)
			}
			for _, e := range es {
				if e.File != "f.yaml" || !strings.HasPrefix(e.Error(), "f.yaml:") {
					t.Fatalf("error does not name the file: %q", e.Error())
				}
			}
			return
		}
		y, err := c.YAML()
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		c2, err := Parse("f2.yaml", y)
		if err != nil {
			t.Fatalf("written config does not parse: %v\n%s", err, y)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("written config reads back different:\n%s\n%s", diff(t, c, c2), y)
		}
	})
}
