package brokertest

import (
	"bufio"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy to a NATS server that a test can make misbehave the
// way a network or a dying broker does: drop the acknowledgements its
// clients publish, stop reading what they send, or cut every connection.
type Proxy struct {
	// URL is where clients connect.
	URL string
	// DropAcks, while set, drops the acknowledgements the clients publish
	// (PUB or HPUB on $JS.ACK.…).
	DropAcks atomic.Bool

	mu    sync.Mutex
	links []*link
}

// link is one client connection through the proxy, and its connection to
// the server.
type link struct {
	client, server net.Conn
	// stalled stops the client's protocol from being read; muted, the
	// server's from reaching the client; closed ends both waits.
	stalled, muted, closed atomic.Bool
}

// wait returns once f is clear, or false once the link is closed.
func (l *link) wait(f *atomic.Bool) bool {
	for f.Load() {
		if l.closed.Load() {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// NewProxy starts a proxy to the server at serverURL until the test ends.
func NewProxy(t testing.TB, serverURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &Proxy{URL: "nats://" + ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); px.Cut(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", u.Host)
			if err != nil {
				_ = c.Close()
				continue
			}
			l := &link{client: c, server: s}
			px.mu.Lock()
			px.links = append(px.links, l)
			px.mu.Unlock()
			wg.Go(func() { l.deliver(); _ = c.Close() })
			wg.Go(func() { px.forward(l); _ = s.Close() })
		}
	})
	return px
}

// forward copies a client's protocol to the server, less what the proxy
// is told to drop.
func (px *Proxy) forward(l *link) {
	r := bufio.NewReader(l.client)
	for {
		if !l.wait(&l.stalled) {
			return
		}
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		out := line
		if f := strings.Fields(string(line)); len(f) >= 3 && (f[0] == "PUB" || f[0] == "HPUB") {
			size, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			payload := make([]byte, size+2) // and its \r\n
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			if px.DropAcks.Load() && strings.HasPrefix(f[1], "$JS.ACK.") {
				continue
			}
			out = append(line, payload...)
		}
		if _, err := l.server.Write(out); err != nil {
			return
		}
	}
}

// deliver copies what the server sends to the client, until the link is
// muted: then it holds what it read and reads no more.
func (l *link) deliver() {
	buf := make([]byte, 32<<10)
	for {
		n, err := l.server.Read(buf)
		// What was read when the link was muted is held, not delivered.
		if !l.wait(&l.muted) {
			return
		}
		if n > 0 {
			if _, werr := l.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// StopDelivering stops what the server sends from reaching the clients
// connected now, while what they send still reaches it: a connection
// whose one direction is stuck. Clients that connect later are served.
func (px *Proxy) StopDelivering() {
	px.mu.Lock()
	defer px.mu.Unlock()
	for _, l := range px.links {
		l.muted.Store(true)
	}
}

// StopReading stops reading what the clients connected now send, as a
// broker that has stopped reading them: once the sockets' buffers are
// full, their writes block. Clients that connect later are read.
func (px *Proxy) StopReading() {
	px.mu.Lock()
	defer px.mu.Unlock()
	for _, l := range px.links {
		l.stalled.Store(true)
	}
}

// Cut closes every connection the proxy holds; clients connect again.
func (px *Proxy) Cut() {
	px.mu.Lock()
	defer px.mu.Unlock()
	for _, l := range px.links {
		l.closed.Store(true)
		_ = l.client.Close()
		_ = l.server.Close()
	}
	px.links = nil
}
