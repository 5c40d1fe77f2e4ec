// Package brokertest starts a real embedded NATS server with JetStream for
// tests, on a free port and a temporary directory.
package brokertest

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
)

// Broker is a running test broker with one connection and the shared
// resources set up.
type Broker struct {
	Embedded *broker.Embedded
	URL      string
	Dir      string
	NC       *nats.Conn
	Res      *broker.Resources
}

// Logger is a logger for tests: quiet unless HVMIND_TEST_LOG is set.
func Logger(t testing.TB) zerolog.Logger {
	if os.Getenv("HVMIND_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()
}

// New starts a broker that stops when the test ends.
func New(t testing.TB) *Broker {
	t.Helper()
	dir := t.TempDir()
	return Start(t, dir, "127.0.0.1:0")
}

// Start starts a broker on a given directory and address (to restart one).
func Start(t testing.TB, dir, listen string) *Broker {
	t.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: listen, DataDir: dir, Logger: Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{Embedded: emb, URL: emb.URL(), Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b.NC, err = broker.Connect(ctx, b.URL, t.Name(), Logger(t))
	if err != nil {
		emb.Shutdown()
		t.Fatal(err)
	}
	b.Res, err = broker.Setup(ctx, b.NC, broker.Options{})
	if err != nil {
		b.NC.Close()
		emb.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

// Connect opens another connection that closes when the test ends.
func (b *Broker) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := broker.Connect(ctx, b.URL, t.Name(), Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Stop closes the connection and shuts the server down; it is safe to call
// more than once.
func (b *Broker) Stop() {
	if b.NC != nil {
		b.NC.Close()
		b.NC = nil
	}
	if b.Embedded != nil {
		b.Embedded.Shutdown()
		b.Embedded = nil
	}
}

// SettledGoroutines counts the goroutines of the process outside the
// embedded nats-server (whose streams and consumers outlive the parts that
// made them), once the count has stopped changing: for tests that a part
// ends every goroutine it started.
func SettledGoroutines() int {
	count := func() int {
		buf := make([]byte, 4<<20)
		n := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if !strings.Contains(g, "nats-server/v2/server") {
				n++
			}
		}
		return n
	}
	n := count()
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		m := count()
		if m == n {
			return n
		}
		n = m
	}
	return n
}
