package contract

import "fmt"

// Clipboard is which way clipboard text may cross a remote-desktop
// connection: ClipboardBoth (the default, also written ""), ClipboardIn
// (from the viewer into the session only), ClipboardOut (from the session
// to the viewer only) or ClipboardNone. The vnc connector enforces it by
// dropping RFB cut-text messages in the refused direction.
type Clipboard string

// The clipboard policies.
const (
	ClipboardBoth Clipboard = "both"
	ClipboardIn   Clipboard = "in"
	ClipboardOut  Clipboard = "out"
	ClipboardNone Clipboard = "none"
)

// ParseClipboard checks s; "" means ClipboardBoth.
func ParseClipboard(s string) (Clipboard, error) {
	switch c := Clipboard(s); c {
	case "":
		return ClipboardBoth, nil
	case ClipboardBoth, ClipboardIn, ClipboardOut, ClipboardNone:
		return c, nil
	}
	return "", fmt.Errorf("clipboard %q: want both, in, out or none", s)
}

// AllowsIn reports whether text may go from the viewer into the session.
func (c Clipboard) AllowsIn() bool { return c == "" || c == ClipboardBoth || c == ClipboardIn }

// AllowsOut reports whether text may go from the session to the viewer.
func (c Clipboard) AllowsOut() bool { return c == "" || c == ClipboardBoth || c == ClipboardOut }
