package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
)

// A broker that stops reading a client, while the client writes, blocks
// the client's write, and nats.go's reader waits for the lock the writer
// holds: the client neither sends nor reads. It must drop that connection
// itself and come back, not wait for the broker's 10 s write deadline (or
// for ever, through a proxy that keeps the connection open). Large
// publishes are written on the publisher's goroutine. Small ones are
// written by nats.go's background flusher, once the sockets' buffers have
// filled (seconds at this rate); its write that times out before its
// first byte drops what it held and, by itself, keeps the connection: no
// reconnect in 34 s, and every publish since lost.
func TestConnectionToABrokerThatStopsReadingIsMadeAgain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		size    int
		between time.Duration
	}{
		{name: "large publishes", size: 512 << 10},
		{name: "small publishes", size: 300, between: 20 * time.Microsecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			px, nc := proxiedConn(t)
			if _, err := nc.Request("echo", []byte("before"), 5*time.Second); err != nil {
				t.Fatalf("request before the stall: %v", err)
			}

			px.StopReading()
			stalled := time.Now()
			payload := make([]byte, tc.size)
			stop := make(chan struct{})
			published := make(chan struct{})
			go func() {
				defer close(published)
				// Up to 64 MB: far more than the sockets' buffers hold.
				for sent := 0; sent < 64<<20; sent += tc.size {
					select {
					case <-stop:
						return
					default:
					}
					if nc.Publish("sink", payload) != nil {
						return
					}
					if tc.between > 0 {
						time.Sleep(tc.between)
					}
				}
			}()
			defer func() { close(stop); <-published }()
			madeAgain(t, nc, stalled, broker.WriteTimeout+30*time.Second, "the broker stopped reading it")
		})
	}
}

// A connection whose broker-to-client direction is stuck (as loopback TCP
// stuck at a zero window was, for 15 s after a broker restart) leaves the
// client reading an empty socket, with nothing to tell it. The PONGs it
// stops getting do: it makes the connection again within seconds.
func TestConnectionWhoseAnswersStopIsMadeAgain(t *testing.T) {
	t.Parallel()
	px, nc := proxiedConn(t)
	px.StopDelivering()
	stuck := time.Now()
	if _, err := nc.Request("echo", []byte("lost"), 500*time.Millisecond); err == nil {
		t.Fatal("an answer came through a muted connection")
	}
	madeAgain(t, nc, stuck, broker.PingInterval*time.Duration(broker.MaxPingsOut+1)+5*time.Second, "the broker's answers stopped")
}

// proxiedConn starts a broker that answers "echo", and connects to it
// through a proxy, as programs do (broker.Connect).
func proxiedConn(t *testing.T) (*brokertest.Proxy, *nats.Conn) {
	t.Helper()
	b := brokertest.New(t)
	px := brokertest.NewProxy(t, b.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := broker.Connect(ctx, px.URL, t.Name(), brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := b.NC.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if err := b.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	return px, nc
}

// madeAgain waits up to limit after since for nc to have reconnected
// (what: what happened at since), then checks a request goes through.
func madeAgain(t *testing.T, nc *nats.Conn, since time.Time, limit time.Duration, what string) {
	t.Helper()
	for nc.Stats().Reconnects == 0 {
		if time.Since(since) > limit {
			t.Fatalf("the connection was not made again %s after %s", time.Since(since).Round(time.Millisecond), what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("connection made again %s after %s", time.Since(since).Round(time.Millisecond), what)
	if msg, err := nc.Request("echo", []byte("after"), 5*time.Second); err != nil || string(msg.Data) != "after" {
		t.Fatalf("request after: %v", err)
	}
}

func TestEmbeddedBrokerTakesNATSOverWebSocket(t *testing.T) {
	t.Parallel()
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), WebSocket: "127.0.0.1:0", Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	ws := emb.WebSocketURL()
	if !strings.HasPrefix(ws, "ws://127.0.0.1:") || strings.HasSuffix(ws, ":0") || strings.HasSuffix(ws, ":-1") {
		t.Fatalf("WebSocket URL %q", ws)
	}
	// A client over the WebSocket and one over TCP see each other's messages.
	overWS, err := broker.Connect(context.Background(), ws, "ws", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer overWS.Close()
	overTCP, err := broker.Connect(context.Background(), emb.URL(), "tcp", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer overTCP.Close()
	sub, err := overWS.Subscribe("hvmind.test.echo", func(m *nats.Msg) { _ = m.Respond(append([]byte("echo "), m.Data...)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := overWS.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := overTCP.Request("hvmind.test.echo", []byte("hi"), 2*time.Second)
	if err != nil {
		t.Fatalf("request over TCP to a WebSocket client: %v", err)
	}
	if string(m.Data) != "echo hi" {
		t.Fatalf("reply %q", m.Data)
	}

	plain, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	if u := plain.WebSocketURL(); u != "" {
		t.Errorf("a broker without a WebSocket listener says %q", u)
	}
	if _, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), WebSocket: "nowhere", Logger: zerolog.Nop()}); err == nil || !strings.Contains(err.Error(), "websocket address") {
		t.Errorf("a bad WebSocket address: %v", err)
	}
}
