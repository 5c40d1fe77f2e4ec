package worker

import "sync"

// A NATS client runs a subscription's callbacks on its own goroutine, and
// may still be running one, or start one for a message it had already
// received, after it was told to unsubscribe. A gate admits such callbacks
// until it is closed and lets the closer wait for those it admitted, so
// that Run does not return while one runs; a callback refused at a closed
// gate does nothing.
type gate struct {
	mu     sync.Mutex
	closed bool
	in     sync.WaitGroup
}

// enter admits a callback, which calls leave when it is done; it reports
// false once the gate is closed.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.in.Add(1)
	return true
}

// leave ends an admitted callback.
func (g *gate) leave() { g.in.Done() }

// close refuses every later callback and waits for the admitted ones.
func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.in.Wait()
}
