package gateway

// wayIn is one way into a session that a page outside the gateway (an
// Open OnDemand card) can link to: a place on the session's own page,
// which asks for the gateway's login and shows it to its owner only.
type wayIn struct {
	// Name is what the way is: "desktop" (the desktop in the browser),
	// "console" (the VNC console, when the browser's desktop is RDP),
	// "rdp" (a connection file for a native RDP client) or "app".
	Name string `json:"name"`
	URL  string `json:"url"`
}

// waysIn lists the ways into a session of profile p whose page is at
// page, as the session page offers them to the owner (web.go
// sessionPage): the console beside an RDP desktop, the native RDP file
// only with the gateway's RDP port and a clipboard rule native clients
// cannot bypass. The fragments pick the view or panel (static
// session.js).
func (g *Gateway) waysIn(p Profile, page string) []wayIn {
	if p.Kind == "app" {
		return []wayIn{{Name: "app", URL: page}}
	}
	ways := []wayIn{{Name: "desktop", URL: page}}
	rdp := g.rdp != nil && (p.RDP || (p.Kind == "vm" && p.VM != nil && p.VM.RDP))
	if rdp {
		ways = append(ways, wayIn{Name: "console", URL: page + "#console"})
		if g.cfg.RDPListen != "" && p.clipboardWhole() {
			ways = append(ways, wayIn{Name: "rdp", URL: page + "#rdp"})
		}
	}
	return ways
}
