package cli

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/airlock-hpc/airlock/internal/config"
)

// oodForm is `airlock config ood-form FILE`: the profiles of the site's
// configuration that an Open OnDemand job can run through the gateway,
// as YAML for the OnDemand app's form.yml.erb (contrib/ood/airlock),
// which lists them in its Session select. A profile the gateway would not
// adopt (a kiosk, a clipboard policy or recording: controls against the
// user that the user's own runner cannot keep; gateway adoptLaunch) is
// left out with a comment saying why, so the form offers no launch the
// gateway refuses. Strings are JSON's quoted strings, which YAML reads.
func oodForm(cfg config.Config, file string) []byte {
	var b bytes.Buffer
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	fmt.Fprintf(&b, "# The airlock gateway's profiles an OnDemand job can run, made by\n")
	fmt.Fprintf(&b, "# `airlock config ood-form %s`; run it again when they change.\n", file)
	fmt.Fprintf(&b, "profiles:\n")
	n := 0
	for _, p := range cfg.Profiles {
		if why := notAdoptable(p); why != "" {
			fmt.Fprintf(&b, "  # %s: not offered: %s\n", p.Name, why)
			continue
		}
		fmt.Fprintf(&b, "  - name: %s\n    title: %s\n    kind: %s\n", q(p.Name), q(p.Title), q(p.Kind))
		n++
	}
	if n == 0 {
		b.WriteString("  []\n")
	}
	return b.Bytes()
}

// notAdoptable says why the gateway would refuse to adopt a job as a
// session of p ("" if it would not).
func notAdoptable(p config.Profile) string {
	switch {
	case p.Desktop != nil && p.Desktop.Kiosk != nil:
		return "a kiosk"
	case p.Clipboard != "" && p.Clipboard != "both":
		return "a clipboard policy (" + p.Clipboard + ")"
	case p.Record:
		return "recorded"
	}
	return ""
}
