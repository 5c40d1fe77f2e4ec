package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/worker"
)

// An acknowledgement lost on its way to the broker (sent just before the
// connection died) is sent again once the connection is back: the job's
// message leaves the queue, instead of staying there for the consumer's
// AckWait, its job done.
func TestLostAcknowledgementIsSentAgain(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	px := newAckDropper(t, b.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := broker.Connect(ctx, px.url, t.Name(), brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w, err := worker.New(nc, worker.Options{ID: "w1", Threads: 1, Tolerance: tolerance,
		Heartbeat: 100 * time.Millisecond, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := broker.GetWorker(ctx, b.Res.Workers, "w1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker did not register")
		}
	}
	records, err := b.NC.SubscribeSync(broker.DoneSubject("w1"))
	if err != nil {
		t.Fatal(err)
	}
	px.dropAcks.Store(true)
	data, err := job.Encode(&job.Job{ID: "j", Task: "sleep", Threads: 1, Duration: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Res.JS.Publish(ctx, broker.JobsSubject("w1"), data); err != nil {
		t.Fatal(err)
	}
	if _, err := records.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no record: %v", err)
	}
	queued := func() uint64 {
		t.Helper()
		info, err := b.Res.JobsOf("w1").Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	time.Sleep(300 * time.Millisecond)
	if n := queued(); n != 1 {
		t.Fatalf("%d messages queued after the acknowledgement was dropped, want 1", n)
	}
	px.dropAcks.Store(false)
	px.cut() // the connection dies; the worker connects again
	for deadline := time.Now().Add(10 * time.Second); queued() != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the message of a job done stays queued after the connection came back")
		}
	}
}

// ackDropper is a TCP proxy to a NATS server that can drop the
// acknowledgements its clients publish (PUB or HPUB on $JS.ACK.…), and cut
// every connection.
type ackDropper struct {
	url      string
	dropAcks atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
}

func newAckDropper(t *testing.T, server string) *ackDropper {
	t.Helper()
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &ackDropper{url: "nats://" + ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); px.cut(); wg.Wait() })
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
			px.mu.Lock()
			px.conns = append(px.conns, c, s)
			px.mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, s); _ = c.Close() })
			wg.Go(func() { px.forward(s, c); _ = s.Close() })
		}
	})
	return px
}

// forward copies the client's protocol to the server, less the
// acknowledgements while dropAcks is set.
func (px *ackDropper) forward(to io.Writer, from io.Reader) {
	r := bufio.NewReader(from)
	for {
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
			if px.dropAcks.Load() && strings.HasPrefix(f[1], "$JS.ACK.") {
				continue
			}
			out = bytes.Join([][]byte{line, payload}, nil)
		}
		if _, err := to.Write(out); err != nil {
			return
		}
	}
}

// cut closes every connection the proxy holds.
func (px *ackDropper) cut() {
	px.mu.Lock()
	defer px.mu.Unlock()
	for _, c := range px.conns {
		_ = c.Close()
	}
	px.conns = nil
}
