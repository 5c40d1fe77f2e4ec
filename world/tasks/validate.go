package tasks

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world"
	"github.com/hvmind/hvmind/world/game"
)

// Validator checks hack, grow and weaken jobs at the pool's door: args is
// [target], and the target is a server of the world the player has root
// on. Jobs of other tasks pass.
func Validator(c *world.Client) job.Validator { return &validator{c: c} }

// serversFresh is how long the validator trusts the list of servers it
// read; a target it does not know makes it read the list again sooner
// (at most once a second), since servers can be bought.
const serversFresh = time.Minute

type validator struct {
	c  *world.Client
	mu sync.Mutex
	// servers by hostname, and when they were read.
	servers map[string]game.Server
	read    time.Time
}

func (v *validator) Validate(ctx context.Context, j job.Job) error {
	if !game.IsOperation(j.Task) {
		return nil
	}
	if len(j.Args) != 1 {
		return fmt.Errorf("%s: args must be [target], got %d args", j.Task, len(j.Args))
	}
	target, ok := j.StringArg(0)
	if !ok || target == "" {
		return fmt.Errorf("%s: args[0] must be the target's hostname", j.Task)
	}
	s, ok, err := v.server(ctx, target)
	if err != nil {
		return nil // the world does not answer: the worker will tell
	}
	if !ok {
		return fmt.Errorf("%s: %w %q", j.Task, world.ErrUnknownTarget, target)
	}
	if !s.HasAdminRights {
		return fmt.Errorf("%s %s: %w", j.Task, target, game.ErrNoRoot)
	}
	return nil
}

// server looks a server up, reading the list again when it is old, or,
// for a name it does not know or a server without root (which a nuke
// changes), when the list is more than a second old.
func (v *validator) server(ctx context.Context, name string) (game.Server, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.servers[name]
	age := time.Since(v.read)
	if (ok && s.HasAdminRights && age < serversFresh) || age < time.Second {
		return s, ok, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	list, err := v.c.Servers(rctx)
	if err != nil {
		if v.servers != nil {
			return s, ok, nil // what it knew
		}
		return game.Server{}, false, err
	}
	v.servers = make(map[string]game.Server, len(list))
	for _, s := range list {
		v.servers[s.Hostname] = s
	}
	v.read = time.Now()
	s, ok = v.servers[name]
	return s, ok, nil
}
