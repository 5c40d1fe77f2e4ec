package worker

import (
	"cmp"
	"context"
	"sort"
	"strconv"
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
	// part is each worker's part of the entry, kept for the worker's
	// life (see write); parts counts the workers in each.
	part  map[string]int
	parts []int
	// written are the parts stored, for the deletion at the end.
	written map[int]bool
	kick    chan struct{}
}

// partWorkers is how many workers one part of a process's entry holds: a
// worker's entry is a few hundred bytes, and a NATS message at most 1 MB
// by default.
const partWorkers = 500

// promptGap is the least time between two writes a prompt asks for: the
// workers of a process launched together join together.
const promptGap = 50 * time.Millisecond

func newProcessBeats(name, instance string, pid int, heartbeat time.Duration, log zerolog.Logger) *processBeats {
	return &processBeats{
		name: name, instance: instance, pid: pid, heartbeat: heartbeat, log: log,
		entries: map[string]broker.WorkerEntry{}, part: map[string]int{}, written: map[int]bool{},
		kick: make(chan struct{}, 1),
	}
}

// Beat implements Beater.
func (b *processBeats) Beat(e broker.WorkerEntry, prompt bool) {
	b.mu.Lock()
	b.entries[e.ID] = e
	if _, ok := b.part[e.ID]; !ok {
		k := 0
		for k < len(b.parts) && b.parts[k] >= partWorkers {
			k++
		}
		if k == len(b.parts) {
			b.parts = append(b.parts, 0)
		}
		b.part[e.ID] = k
		b.parts[k]++
	}
	b.mu.Unlock()
	if prompt {
		b.poke()
	}
}

// Leave implements Beater.
func (b *processBeats) Leave(id string) {
	b.mu.Lock()
	delete(b.entries, id)
	if k, ok := b.part[id]; ok {
		delete(b.part, id)
		b.parts[k]--
	}
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
			for k := range b.written {
				if err := kv.Delete(dctx, b.key(k)); err != nil {
					b.log.Debug().Err(err).Msg("deregister the worker process")
				}
			}
			cancel()
			return
		case <-t.C:
		case <-b.kick:
			// Prompts that come together make one write.
			select {
			case <-ctx.Done():
				continue
			case <-time.After(promptGap):
			}
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

// key is the registry key of part k of the process's entry: part 0 is
// the process's own key, the others follow it ("process.<name>.<k>").
func (b *processBeats) key(k int) string {
	if k == 0 {
		return broker.ProcessKey(b.name)
	}
	return broker.ProcessKey(b.name) + "." + strconv.Itoa(k)
}

// write stores the process's entry with its workers' latest entries, in
// parts of at most partWorkers workers. A worker stays in its part while
// it lives: a pool that reads a part without it takes it as left.
func (b *processBeats) write(ctx context.Context, kv jetstream.KeyValue) error {
	b.mu.Lock()
	now := time.Now()
	parts := make([]broker.ProcessEntry, len(b.parts))
	for k := range parts {
		parts[k] = broker.ProcessEntry{Process: b.name, PID: b.pid, Instance: b.instance, Beat: now, Heartbeat: b.heartbeat}
	}
	for id, w := range b.entries {
		k := b.part[id]
		parts[k].Workers = append(parts[k].Workers, w)
	}
	b.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, min(max(b.heartbeat, 100*time.Millisecond), brokerTimeout))
	defer cancel()
	var first error
	for k, e := range parts {
		if len(e.Workers) == 0 && !b.written[k] {
			continue
		}
		sort.Slice(e.Workers, func(i, j int) bool { return e.Workers[i].ID < e.Workers[j].ID })
		if err := broker.PutProcessKey(cctx, kv, b.key(k), e); err != nil {
			first = cmp.Or(first, err)
			continue
		}
		b.written[k] = true
	}
	return first
}
