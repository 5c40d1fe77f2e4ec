package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WorkerEntry is a worker's record in the registry bucket, rewritten by every
// heartbeat. Its key is the worker id.
type WorkerEntry struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Threads int    `json:"threads"`
	// Busy is the threads in use now; Queued the jobs waiting to start.
	Busy    int          `json:"busy"`
	Queued  int          `json:"queued"`
	Running []RunningJob `json:"running,omitempty"`
	Tasks   []string     `json:"tasks,omitempty"`
	// Done and Missed count the jobs this worker instance ended.
	Done   int64 `json:"done"`
	Missed int64 `json:"missed"`
	// PID and Instance identify the process; a new process gets a new Instance.
	PID int `json:"pid"`
	// Machine is where PID means something: the machine and its process
	// namespace (see MachineID; empty when unknown). A pool on another
	// machine, or in another container, must not look that pid up.
	Machine  string    `json:"machine,omitempty"`
	Instance string    `json:"instance"`
	Started  time.Time `json:"started"`
	Beat     time.Time `json:"beat"`
	// Heartbeat is the interval between this worker's beats; a worker is
	// taken as gone after a few missed beats.
	Heartbeat time.Duration `json:"heartbeat"`
	// OnDemand marks a worker the pool launched for a job that did not fit;
	// the pool stops it when it has been idle for a while.
	OnDemand bool `json:"onDemand,omitempty"`
	// Stopping is set while the worker shuts down gracefully.
	Stopping bool `json:"stopping,omitempty"`
}

// RunningJob is a job a worker is running, as shown in its registry entry.
type RunningJob struct {
	ID        string  `json:"id"`
	Task      string  `json:"task"`
	Threads   int     `json:"threads"`
	Start     float64 `json:"start"`
	End       float64 `json:"end"`
	Scheduled float64 `json:"scheduled,omitempty"`
}

// PutWorker writes a worker's registry entry.
func PutWorker(ctx context.Context, kv jetstream.KeyValue, e WorkerEntry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, e.ID, data); err != nil {
		return fmt.Errorf("register worker %s: %w", e.ID, err)
	}
	return nil
}

// PutWorkerAt writes a worker's registry entry over the revision the
// writer wrote last (0: whatever is there), and returns the new revision.
// It fails with jetstream.ErrKeyRevisionMismatch when someone else wrote
// the entry in between: a worker checks who then, instead of reading its
// entry before every beat (half its registry calls).
func PutWorkerAt(ctx context.Context, kv jetstream.KeyValue, e WorkerEntry, rev uint64) (uint64, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	var n uint64
	if rev == 0 {
		n, err = kv.Put(ctx, e.ID, data)
	} else {
		n, err = kv.Update(ctx, e.ID, data, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("register worker %s: %w", e.ID, err)
	}
	return n, nil
}

// GetWorker reads one registry entry; ErrKeyNotFound when absent.
func GetWorker(ctx context.Context, kv jetstream.KeyValue, id string) (WorkerEntry, error) {
	var e WorkerEntry
	ent, err := kv.Get(ctx, id)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(ent.Value(), &e); err != nil {
		return e, fmt.Errorf("registry entry %s: %w", id, err)
	}
	return e, nil
}

// ProcessKeyPrefix starts the registry key of a worker process's entry:
// "process.<name>". A worker id holds no dot, so no worker's key starts so.
const ProcessKeyPrefix = "process."

// ProcessEntry is the registry entry of a worker process: the entries of
// every worker it runs, written once a heartbeat for all of them. A
// thousand workers beating one by one were a thousand registry writes a
// second, each stored to disk; a process of them is one.
type ProcessEntry struct {
	Process   string        `json:"process"`
	PID       int           `json:"pid"`
	Instance  string        `json:"instance"`
	Beat      time.Time     `json:"beat"`
	Heartbeat time.Duration `json:"heartbeat"`
	Workers   []WorkerEntry `json:"workers"`
}

// ProcessKey is the registry key of a worker process's entry.
func ProcessKey(process string) string { return ProcessKeyPrefix + process }

// PutProcess writes a worker process's entry.
func PutProcess(ctx context.Context, kv jetstream.KeyValue, e ProcessEntry) error {
	return PutProcessKey(ctx, kv, ProcessKey(e.Process), e)
}

// PutProcessKey writes a worker process's entry, or a part of it, under
// key: a process of many workers writes them in parts
// (ProcessKey(name), then ProcessKey(name)+".1", ".2"…), each a set of
// workers that stay in it while they live.
func PutProcessKey(ctx context.Context, kv jetstream.KeyValue, key string, e ProcessEntry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("register worker process %s: %w", e.Process, err)
	}
	return nil
}

// FindWorker reads a worker's registry entry, its own or in the entry of
// the worker process it runs in; ErrKeyNotFound when neither has it.
func FindWorker(ctx context.Context, kv jetstream.KeyValue, id string) (WorkerEntry, error) {
	e, err := GetWorker(ctx, kv, id)
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return e, err
	}
	keys, lerr := kv.ListKeysFiltered(ctx, ProcessKeyPrefix+">")
	if lerr != nil {
		if errors.Is(lerr, jetstream.ErrNoKeysFound) {
			return e, err
		}
		return e, lerr
	}
	for key := range keys.Keys() {
		ent, gerr := kv.Get(ctx, key)
		if gerr != nil {
			continue
		}
		var pe ProcessEntry
		if json.Unmarshal(ent.Value(), &pe) != nil {
			continue
		}
		for _, w := range pe.Workers {
			if w.ID == id {
				_ = keys.Stop()
				return w, nil
			}
		}
	}
	return e, err
}

// MachineID names this machine and its process namespace, for a pid to
// be looked up only where it means something: /etc/machine-id (or
// D-Bus's, or else the host name) and the namespace of /proc/self/ns/pid.
// Empty when either is unknown (not Linux).
var MachineID = sync.OnceValue(func() string {
	var id string
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(b)) > 0 {
			id = string(bytes.TrimSpace(b))
			break
		}
	}
	if id == "" {
		id, _ = os.Hostname()
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if id == "" || err != nil {
		return ""
	}
	return id + "/" + ns
})
