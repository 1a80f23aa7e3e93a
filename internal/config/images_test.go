package config

import (
	"reflect"
	"testing"
)

// TestImageDefaults checks that each item of images starts from the
// image defaults, and that a vm profile names its image.
func TestImageDefaults(t *testing.T) {
	c, err := Parse("t.yaml", []byte(`
images:
  - {name: a, path: /srv/a.qcow2}
  - {name: b, path: /srv/b.iso, format: iso, os: other, cpus: {max: 2}, share: {path: ""}}
profiles:
  - {name: vm-a, kind: vm, vm: {image: a}}
`))
	if err != nil {
		t.Fatal(err)
	}
	var want Image
	want.setDefaults()
	want.Name, want.Path = "a", "/srv/a.qcow2"
	if !reflect.DeepEqual(c.Images[0], want) {
		t.Errorf("got %+v\nwant %+v", c.Images[0], want)
	}
	b := c.Images[1]
	if b.Format != "iso" || b.CPUs != (Range[int]{Default: 1, Max: 2}) || b.Memory.Default != 2*GiB || b.Share.Path != "" || b.Firmware != "bios" {
		t.Errorf("b: %+v", b)
	}
	if p, ok := c.Profile("vm-a"); !ok || p.VM.Image != "a" {
		t.Errorf("profile vm-a: %+v", p)
	}
	if im, ok := c.Image("a"); !ok || im.Path != "/srv/a.qcow2" {
		t.Errorf("Image(a) = %+v, %v", im, ok)
	}
	if _, ok := c.Image("nope"); ok {
		t.Error("Image(nope) found")
	}
}
