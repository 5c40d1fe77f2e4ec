package broker

import (
	"net"
	"time"

	"github.com/nats-io/nats.go"
)

// WriteTimeout is how long a write to the broker's socket may go without
// a byte going out before the client gives the connection up.
//
// nats.go's writer holds the connection's lock while it writes, and its
// reader takes that lock to answer the broker's PING and to take its
// INFO: a write that blocks stops the reading too. After a broker
// restart, a process that sends a burst (its held publishes,
// acknowledgements and records sent again) while the broker sends it one
// (its queues' messages again) can block both ways at once, each side
// writing to one that does not read, until nats-server's write deadline
// (10 s) cuts the connection and the process's requests have timed out.
//
// nats.go's own bound (FlusherTimeout) is not enough: it bounds a whole
// write, however large, and a write of its background flusher that fails
// before its first byte drops what it held and keeps the connection, so
// the publishes in it are lost with no reconnect to send them again.
// stallGuard closes the connection instead, which makes the client
// reconnect and send again what it had not had answered (records,
// acknowledgements), or ask again.
const WriteTimeout = 3 * time.Second

// PingInterval and MaxPingsOut: the client asks the broker for a PONG
// every PingInterval, and takes the connection as dead, and makes it
// again, once MaxPingsOut have gone unanswered: about 4 s after the
// broker's last answer. A worker process was seen reading an empty socket
// for 15 s after a broker restart while nats-server could not write 839
// bytes to it ("WriteDeadline of 10s exceeded"): most likely loopback TCP
// stuck at a zero window, whose reopening the sender learns only from its
// probes, at doubling intervals. Nothing came in, so the client's reader waited; the
// PONGs it does not get now tell it. nats.go's default is a PING every 2
// minutes.
const (
	PingInterval = time.Second
	MaxPingsOut  = 3
)

// writeChunk bounds one write to the socket, so that the timeout is on
// progress: a large message over a slow link is not a stall.
const writeChunk = 64 << 10

// stallGuardDialer dials connections guarded by stallGuard.
type stallGuardDialer struct {
	net.Dialer
}

// Dial implements nats.CustomDialer.
func (d *stallGuardDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.Dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &stallGuard{Conn: c}, nil
}

var _ nats.CustomDialer = (*stallGuardDialer)(nil)

// stallGuard is a connection whose writes fail, and close it, once no
// byte has gone out for WriteTimeout.
type stallGuard struct {
	net.Conn
}

// Write writes b in chunks, each with WriteTimeout to go out.
func (c *stallGuard) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		end := min(len(b), n+writeChunk)
		_ = c.Conn.SetWriteDeadline(time.Now().Add(WriteTimeout))
		m, err := c.Conn.Write(b[n:end])
		n += m
		if err != nil {
			// The reader fails too, and the client reconnects.
			_ = c.Conn.Close()
			return n, err
		}
	}
	return n, nil
}

// SetWriteDeadline ignores the deadline a caller sets: each chunk has its
// own (nats.go sets one for a whole write).
func (c *stallGuard) SetWriteDeadline(time.Time) error { return nil }
