// Package portal renders airlock's browser pages from view models the
// gateway fills in: login, the user's sessions with the launch form, a
// session (the noVNC desktop or a link to the app), the admin view and
// error pages, plus the static assets (CSS, the pages' JavaScript and the
// noVNC client installed from npm at build time and embedded). It never
// imports the store, a backend or the runner.
package portal

import (
	"html/template"
	"time"
)

// Base is what every page has.
type Base struct {
	Title string
	User  string // empty when not logged in
	Admin bool
	// CSRF-free: the pages use fetch with the cookie and the API checks
	// Origin/Sec-Fetch-Site (net/http.CrossOriginProtection).
}

// LoginPage asks for a name and password.
type LoginPage struct {
	Base
	Error string // why the last attempt failed, safe to show
	Next  string // where to go after logging in (a local path)
	// Providers are the single-sign-on buttons, one per OpenID provider.
	Providers []LoginProvider
	// EmailLogin shows the form asking for a login link by e-mail.
	EmailLogin bool
	// Notice is a message that is not an error (a link was sent).
	Notice string
}

// LoginProvider is a button that logs in through an OpenID provider.
type LoginProvider struct {
	Title string
	URL   string // a local path starting the login
}

// Profile is a launch choice with its limits, for the form.
type Profile struct {
	Name, Title, Kind string
	// Description is the profile's sentence, shown under the choice.
	Description           string
	CPUs, MaxCPUs         int
	MemoryMB, MaxMemoryMB int
	Lifetime, MaxLifetime time.Duration
	// KeepDisk: a vm profile whose image lets a launch keep its disk.
	KeepDisk bool
}

// SessionRow is one line in a session list.
type SessionRow struct {
	ID, Profile, State, Reason, Owner string
	Persistent                        bool
	Created                           time.Time
	Ends                              time.Time // zero: no limit or not started
	Node                              string
	// Accel (VM sessions) is kvm, or tcg when the guest is emulated.
	Accel string
}

// HomePage lists the user's sessions and offers the launch form.
type HomePage struct {
	Base
	Sessions []SessionRow
	Profiles []Profile
	Tokens   []Token
	// NotifyEmail is the address a "ready" e-mail would go to; "" hides
	// the choice (no relay, or no address known).
	NotifyEmail string
}

// Token is a bearer token for scripts, listed so it can be revoked.
type Token struct {
	ID, Name          string
	Created, LastUsed time.Time
}

// Share is a share link of a session, listed so the owner can revoke it.
type Share struct {
	ID, Mode         string
	Created, Expires time.Time
	Revoked          bool
}

// SessionPage shows one session: the desktop in noVNC for a desktop
// session (WebSocketPath is the proxy path of its vnc connector), or a
// link to the app for an app session (AppPath).
type SessionPage struct {
	Base
	Session       SessionRow
	WebSocketPath string // e.g. /s/ID/console/ (the page makes it wss://host/...)
	AppPath       string // e.g. /s/ID/app/
	ViewOnly      bool   // the viewer came through a view-only share
	IsOwner       bool
	Shares        []Share
	// RDP: the owner may download an .airlock file for native RDP clients.
	RDP bool
	// RDPPassword is the guest's one-time password (owner only; "" for none).
	RDPPassword string
	// RDPUser is the account RDPPassword is for ("" when the guest's
	// image decides): with both, the browser's RDP client logs on with
	// them inside CredSSP without asking.
	RDPUser string
	// NoClipIn and NoClipOut are the directions the profile's clipboard
	// policy refuses (viewer to desktop, desktop to viewer); the page
	// shows no clipboard panel when both are. The connector enforces the
	// policy; this only hides what would not work.
	NoClipIn, NoClipOut bool
	// RDPWeb: the owner may open the desktop with the browser's RDP client
	// (the default view then, beside the VNC console); RDPCredSSP says
	// whether the client runs NLA (a server that demands it) or TLS only.
	RDPWeb, RDPCredSSP bool
	// RDPDefault makes RDP the default view (a desktop's: its server
	// serves the Xvnc that is already up); a VM's guest may take minutes
	// to serve RDP, so its console comes first.
	RDPDefault bool
	// RDPSize is the desktop's fixed size (WIDTHxHEIGHT) when it has one
	// (a desktop's Xvnc); the client asks for it rather than the window's.
	RDPSize string
}

// AdminPage shows every session and the node.
type AdminPage struct {
	Base
	Sessions      []SessionRow
	Load          float64 // 1-minute load average per CPU
	FreeMemoryMB  int
	TotalMemoryMB int
}

// ErrorPage says what went wrong, in words safe to show.
type ErrorPage struct {
	Base
	Status  int
	Message string
}

// TermsPage is a profile's terms of use, to accept before launching it.
type TermsPage struct {
	Base
	Profile, ProfileTitle string
	Text                  string
	Hash                  string // of Text; the form sends it back
	Changed               bool   // an older text was accepted
}

// TOTPPage is one of the second factor's pages; Mode says which: "code"
// (the login's second step), "enrol" (a QR code to scan and a code to
// confirm it), "recovery" (the recovery codes, shown once) or "account"
// (enrolled; a code removes it).
type TOTPPage struct {
	Base
	Mode   string
	Action string // where the form posts
	Next   string // where to go after the login
	Error  string
	// Required: the user's groups need a second factor (enrol).
	Required bool
	// QR is a data: URL of the QR code's PNG; Secret the key to type by
	// hand; Sealed the key sealed for this browser, posted back with the
	// confirming code (enrol).
	QR            template.URL
	Secret        string
	Sealed        string
	RecoveryCodes []string
}

// RecordingsPage lists the session recordings for admins, newest first,
// with a player that replays one through noVNC.
type RecordingsPage struct {
	Base
	Recordings []RecordingRow
}

// RecordingRow is one recording.
type RecordingRow struct {
	Session, Name, User string
	Started             time.Time
	DurationMS          int64
	FileBytes           int64
	End                 string
	Complete            bool
	// Kind is "vnc" or "rdp"; Channels, an RDP recording's client
	// channels (comma-separated), which its replay must ask for too.
	Kind, Channels string
}
