package ticket

// Len reports how many nonces g remembers, so tests can see sweeping work.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}
