package gateway

// Revocation across gateways (issue 18). On a store several gateways
// share and that can broadcast (PostgreSQL's NOTIFY), every revokeEvent a
// gateway acts on and every session it updates is told to the others,
// which act on it as if it were their own: a token revoked through one
// closes the connections it let in on all of them, and empties their
// fast-path caches, at once rather than at their next re-check. A message
// can only take away (close connections, forget cached answers, wake event
// streams that then ask the store again): one forged by whoever can write
// to the database grants nothing. A message lost while a listener
// reconnects is covered by forgetting every cached answer on reconnecting
// and by recheckViewers.

import (
	"context"
	"encoding/json"
	"time"
)

// peerMsg is what one gateway tells the others.
type peerMsg struct {
	From    string       `json:"from"`
	Revoke  *revokeEvent `json:"revoke,omitempty"`
	Changed string       `json:"changed,omitempty"` // a session id
}

// publishWait bounds a broadcast on the path of the request that made it.
const publishWait = time.Second

// publish tells the other gateways; a failure is logged, and they learn
// it at their next re-check instead.
func (g *Gateway) publish(m peerMsg) {
	if g.bcast == nil {
		return
	}
	m.From = g.lease.holder
	b, err := json.Marshal(m)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), publishWait)
		err = g.bcast.Broadcast(ctx, b)
		cancel()
	}
	if err != nil {
		g.log.Warn("tell the other gateways; they see it at their next re-check", "error", err)
	}
}

// listenPeers acts on what the other gateways tell.
func (g *Gateway) listenPeers() {
	defer g.wg.Done()
	for b := range g.bcast.Listen(g.ctx) {
		if b == nil {
			// (Re)connected: what was said meanwhile is lost.
			g.fast.forgetAll()
			g.forwardsChanged()
			continue
		}
		var m peerMsg
		if err := json.Unmarshal(b, &m); err != nil {
			g.log.Warn("a message from another gateway does not decode", "error", err)
			continue
		}
		if m.From == g.lease.holder {
			continue
		}
		if m.Revoke != nil {
			g.revokeHere(g.ctx, *m.Revoke)
		}
		if m.Changed != "" {
			g.fast.forgetSession(m.Changed)
			g.forwardsChanged()
			g.events.changed(m.Changed)
		}
	}
}
