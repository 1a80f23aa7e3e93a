package runner_test

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// writePNG saves the viewer's framebuffer as a test artifact under
// .artifacts/screenshots, for a person to look at.
func writePNG(t *testing.T, r *realtest.RFB, name string) {
	img := image.NewRGBA(image.Rect(0, 0, r.W, r.H))
	for i := 0; i+4 <= len(r.Frame); i += 4 {
		p := i / 4
		img.Set(p%r.W, p/r.W, color.RGBA{r.Frame[i+2], r.Frame[i+1], r.Frame[i], 255})
	}
	dir := filepath.Join(moduleRoot(t), ".artifacts", "screenshots")
	os.MkdirAll(dir, 0o755)
	f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "-")+"-"+name))
	if err != nil {
		t.Log(err)
		return
	}
	defer f.Close()
	png.Encode(f, img)
}
