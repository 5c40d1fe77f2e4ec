package worker

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
)

// Beater takes the heartbeats of workers that share a process and writes
// them to the registry together, in the process's entry (see
// broker.ProcessEntry), instead of one registry write per worker per beat.
type Beater interface {
	// Beat hands over a worker's current entry; prompt asks for it to be
	// written at once (a worker that joins, or is stopping), not at the
	// next beat.
	Beat(e broker.WorkerEntry, prompt bool)
	// Leave takes a stopped worker out of the entry, at once.
	Leave(id string)
}

// processBeats is a worker process's Beater: every heartbeat, and at once
// when asked, it writes the latest entry of each of its workers.
type processBeats struct {
	name      string
	instance  string
	pid       int
	heartbeat time.Duration
	log       zerolog.Logger

	mu      sync.Mutex
	entries map[string]broker.WorkerEntry
	kick    chan struct{}
}

func newProcessBeats(name, instance string, pid int, heartbeat time.Duration, log zerolog.Logger) *processBeats {
	return &processBeats{
		name: name, instance: instance, pid: pid, heartbeat: heartbeat, log: log,
		entries: map[string]broker.WorkerEntry{}, kick: make(chan struct{}, 1),
	}
}

// Beat implements Beater.
func (b *processBeats) Beat(e broker.WorkerEntry, prompt bool) {
	b.mu.Lock()
	b.entries[e.ID] = e
	b.mu.Unlock()
	if prompt {
		b.poke()
	}
}

// Leave implements Beater.
func (b *processBeats) Leave(id string) {
	b.mu.Lock()
	delete(b.entries, id)
	b.mu.Unlock()
	b.poke()
}

func (b *processBeats) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// loop writes the process's entry every heartbeat and when poked, until
// ctx ends; then it deletes the entry, so that the pool sees the workers
// that were still in it leave at once. The caller ends ctx after its
// workers have left.
func (b *processBeats) loop(ctx context.Context, kv jetstream.KeyValue) {
	t := time.NewTicker(b.heartbeat)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
			if err := kv.Delete(dctx, broker.ProcessKey(b.name)); err != nil {
				b.log.Debug().Err(err).Msg("deregister the worker process")
			}
			cancel()
			return
		case <-t.C:
		case <-b.kick:
		}
		err := b.write(ctx, kv)
		switch {
		case err != nil && !failing:
			failing = true
			b.log.Warn().Err(err).Msg("heartbeat failed; retrying")
		case err == nil && failing:
			failing = false
			b.log.Info().Msg("heartbeat restored")
		}
	}
}

// write stores the process's entry with its workers' latest entries.
func (b *processBeats) write(ctx context.Context, kv jetstream.KeyValue) error {
	b.mu.Lock()
	e := broker.ProcessEntry{
		Process: b.name, PID: b.pid, Instance: b.instance, Beat: time.Now(), Heartbeat: b.heartbeat,
		Workers: make([]broker.WorkerEntry, 0, len(b.entries)),
	}
	for _, w := range b.entries {
		e.Workers = append(e.Workers, w)
	}
	b.mu.Unlock()
	sort.Slice(e.Workers, func(i, j int) bool { return e.Workers[i].ID < e.Workers[j].ID })
	cctx, cancel := context.WithTimeout(ctx, min(max(b.heartbeat, 100*time.Millisecond), brokerTimeout))
	defer cancel()
	return broker.PutProcess(cctx, kv, e)
}
