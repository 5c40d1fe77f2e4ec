package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

// maxPackBytes bounds one message of jobs, well under the broker's 1 MB
// payload limit.
const maxPackBytes = 256 << 10

// publishTimeout is how long a dispatch waits for JetStream to store its
// messages (from the last time they were sent), and publishResendCheck how
// often it looks for a reconnect that calls for sending them again.
const (
	publishTimeout     = 10 * time.Second
	publishResendCheck = 50 * time.Millisecond
)

// publish stores placed jobs on their workers' subjects, all or none: if any
// is refused, the stored ones are deleted again and every reservation is
// released.
//
// The jobs a dispatch places on one worker travel in one message, a JSON
// array (a lone job is a plain object): most of a job's broker work is per
// message, and the worker takes the message off its queue once every job in
// it has its record stored.
func (p *Pool) publish(ctx context.Context, placed []placement) error {
	packs, err := packJobs(placed)
	if err != nil {
		p.mu.Lock()
		p.unplaceLocked(placed)
		p.mu.Unlock()
		return err
	}
	var (
		mu       sync.Mutex
		seqs     = make([]uint64, len(packs))
		settled  = make([]bool, len(packs)) // stored, refused, or never sent
		firstErr error
		left     = len(packs)
		done     = make(chan struct{})
	)
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	answered := func() {
		left--
		if left == 0 {
			close(done)
		}
	}
	// Each message carries its own id, so that one sent again after a
	// reconnect is stored once: JetStream answers a copy of a message it
	// has with the first one's sequence.
	msgIDs := make([]string, len(packs))
	for i := range packs {
		msgIDs[i] = nuid.Next()
	}
	var tokens []string
	send := func(i int) error {
		pk := packs[i]
		m := nats.NewMsg(broker.JobsSubject(pk.worker))
		m.Header.Set(jetstream.MsgIDHeader, msgIDs[i])
		m.Data = pk.data
		token, err := p.acks.Publish(m, func(ack broker.PubAck, err error) {
			mu.Lock()
			defer mu.Unlock()
			if settled[i] { // the answer to a copy sent again
				return
			}
			if err != nil {
				fail(fmt.Errorf("publish jobs for %s: %w", pk.worker, err))
			} else {
				seqs[i] = ack.Seq
			}
			settled[i] = true
			answered()
		})
		if err == nil {
			tokens = append(tokens, token)
		}
		return err
	}
	for i := range packs {
		if err := send(i); err != nil {
			mu.Lock()
			fail(fmt.Errorf("publish jobs for %s: %w", packs[i].worker, err))
			for k := range packs[i:] { // never sent: never answered
				settled[i+k] = true
				answered()
			}
			mu.Unlock()
			break
		}
	}
	// A message sent just before the connection to the broker was lost
	// may never be answered: after a reconnect, the messages not yet
	// answered are sent again (at most stored once, by their id), instead
	// of waiting out the timeout. A dispatch during a broker restart took
	// 10 s to fail, and its batcher lost 17 s of income.
	reconnects := p.nc.Stats().Reconnects
	resend := time.NewTicker(publishResendCheck)
	defer resend.Stop()
	timeout := time.NewTimer(publishTimeout)
	defer timeout.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-timeout.C:
			mu.Lock()
			fail(errors.New("publish jobs: no acknowledgement from JetStream"))
			mu.Unlock()
			break wait
		case <-ctx.Done():
			mu.Lock()
			fail(ctx.Err())
			mu.Unlock()
			break wait
		case <-resend.C:
			r := p.nc.Stats().Reconnects
			if r == reconnects || !p.nc.IsConnected() {
				continue
			}
			reconnects = r
			mu.Lock()
			var again []int
			for i := range packs {
				if !settled[i] {
					again = append(again, i)
				}
			}
			mu.Unlock()
			for _, i := range again {
				if send(i) != nil {
					break // the connection went again: the next reconnect
				}
			}
			timeout.Reset(publishTimeout)
		}
	}
	for _, t := range tokens {
		p.acks.Forget(t)
	}
	// A late answer may still come in: work on copies.
	mu.Lock()
	stored := append([]uint64(nil), seqs...)
	known := append([]bool(nil), settled...)
	result := firstErr
	mu.Unlock()
	if result != nil {
		// The stored messages are taken out first, while their threads
		// stay reserved: no other job is placed on them meanwhile.
		for i, seq := range stored {
			if seq != 0 {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
				_ = p.res.JobsOf(packs[i].worker).DeleteMsg(dctx, seq)
				cancel()
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if result != nil {
		p.unplaceLocked(placed)
		// A message JetStream has not answered for may be stored, and its
		// jobs run: their ids stay taken, so a retry is refused.
		now := time.Now()
		for i, pk := range packs {
			if !known[i] {
				for _, id := range pk.ids {
					p.recent.add(id, now)
				}
			}
		}
		return result
	}
	for i, pk := range packs {
		for _, id := range pk.ids {
			if in := p.jobs[id]; in != nil {
				in.seq = stored[i]
			}
		}
	}
	return nil
}

// pack is one message of jobs for one worker.
type pack struct {
	worker string
	ids    []string
	data   []byte
}

// packJobs groups placed jobs by worker, in order, into messages of at most
// maxPackBytes.
func packJobs(placed []placement) ([]pack, error) {
	var packs []pack
	open := map[string]int{} // worker -> index of its open pack
	for _, pl := range placed {
		data, err := job.Encode(pl.job)
		if err != nil {
			return nil, fmt.Errorf("encode job %s: %w", pl.job.ID, err)
		}
		w := pl.job.Worker
		i, ok := open[w]
		if ok && len(packs[i].data)+1+len(data)+1 > maxPackBytes {
			ok = false
		}
		if !ok {
			open[w] = len(packs)
			packs = append(packs, pack{worker: w, ids: []string{pl.job.ID}, data: data})
			continue
		}
		pk := &packs[i]
		if len(pk.ids) == 1 {
			pk.data = append([]byte{'['}, pk.data...)
		} else {
			pk.data = pk.data[:len(pk.data)-1] // the closing bracket
		}
		pk.data = append(append(append(pk.data, ','), data...), ']')
		pk.ids = append(pk.ids, pl.job.ID)
	}
	return packs, nil
}
