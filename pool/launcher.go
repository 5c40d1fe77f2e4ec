package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// ErrNoLauncher means the pool was configured without a way to start workers.
var ErrNoLauncher = errors.New("the pool cannot launch workers")

// WorkerSpec describes a worker to launch.
type WorkerSpec struct {
	ID      string
	Host    string
	Threads int
}

// Launcher starts worker processes.
type Launcher interface {
	// Launch starts a worker; it returns once the process has started, not
	// once the worker has registered.
	Launch(ctx context.Context, spec WorkerSpec) error
}

// LocalLauncher starts hvmind-worker processes on this machine, detached in
// their own session so that they outlive the pool.
type LocalLauncher struct {
	// Bin is the hvmind-worker executable.
	Bin string
	// NATS is the URL the workers connect to.
	NATS string
	// LogDir receives one log file per worker.
	LogDir string
	// Args are extra flags for every worker (timing settings, log level).
	Args []string
	// Logger receives launch notices.
	Logger zerolog.Logger

	mu    sync.Mutex
	procs map[int]chan struct{} // pid -> closed when the process exits
}

// FindWorkerBin looks for hvmind-worker beside the running executable, then
// on PATH.
func FindWorkerBin() (string, error) {
	if exe, err := os.Executable(); err == nil {
		cand := filepath.Join(filepath.Dir(exe), "hvmind-worker")
		if st, err := os.Stat(cand); err == nil && !st.IsDir() {
			return cand, nil
		}
	}
	p, err := exec.LookPath("hvmind-worker")
	if err != nil {
		return "", fmt.Errorf("%w: hvmind-worker is neither beside this program nor on PATH (set --worker-bin)", ErrNoLauncher)
	}
	return p, nil
}

// Launch starts one worker process.
func (l *LocalLauncher) Launch(_ context.Context, spec WorkerSpec) error {
	if l.Bin == "" {
		return ErrNoLauncher
	}
	if err := os.MkdirAll(l.LogDir, 0o755); err != nil {
		return fmt.Errorf("launch worker %s: %w", spec.ID, err)
	}
	logPath := filepath.Join(l.LogDir, "worker-"+spec.ID+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("launch worker %s: %w", spec.ID, err)
	}
	defer logFile.Close()
	args := append([]string{
		"--id", spec.ID, "--host", spec.Host, "--threads", strconv.Itoa(spec.Threads),
		"--nats", l.NATS, "--log-format", "json",
	}, l.Args...)
	cmd := exec.Command(l.Bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("launch worker %s: %w", spec.ID, err)
	}
	l.Logger.Info().Str("worker", spec.ID).Int("pid", cmd.Process.Pid).Int("threads", spec.Threads).
		Str("log", logPath).Msg("launched worker")
	exited := make(chan struct{})
	l.mu.Lock()
	if l.procs == nil {
		l.procs = map[int]chan struct{}{}
	}
	l.procs[cmd.Process.Pid] = exited
	l.mu.Unlock()
	go func() { // reap it if it exits while we live
		_ = cmd.Wait()
		close(exited)
		l.mu.Lock()
		delete(l.procs, cmd.Process.Pid)
		l.mu.Unlock()
	}()
	return nil
}

// StopAll sends SIGTERM to every worker this launcher started that is still
// running, and waits up to timeout for them to exit.
func (l *LocalLauncher) StopAll(timeout time.Duration) {
	l.mu.Lock()
	procs := make(map[int]chan struct{}, len(l.procs))
	for pid, ch := range l.procs {
		procs[pid] = ch
	}
	l.mu.Unlock()
	for pid := range procs {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.After(timeout)
	for pid, ch := range procs {
		select {
		case <-ch:
		case <-deadline:
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (p *Pool) canLaunch() bool { return p.opts.Spawn && p.opts.Launcher != nil }

// nextWorkerID returns "<host>-<n>" for the smallest n not in use.
func (p *Pool) nextWorkerIDLocked() string {
	used := map[string]bool{}
	for id := range p.workers {
		used[id] = true
	}
	for n := 1; ; n++ {
		id := p.opts.Host + "-" + strconv.Itoa(n)
		if !used[id] {
			return id
		}
	}
}

// launchAndWait starts a local worker and waits until it has registered.
func (p *Pool) launchAndWait(ctx context.Context, threads int) error {
	p.mu.Lock()
	id := p.nextWorkerIDLocked()
	ws := newWorkerState(id, 0)
	ws.launched = time.Now()
	p.workers[id] = ws
	p.mu.Unlock()
	return p.launch(ctx, WorkerSpec{ID: id, Host: p.opts.Host, Threads: threads})
}

func (p *Pool) launch(ctx context.Context, spec WorkerSpec) error {
	if err := p.opts.Launcher.Launch(ctx, spec); err != nil {
		p.forgetLaunch(spec.ID)
		p.warnOnce("launch", func(e *zerolog.Event) *zerolog.Event { return e.Err(err) },
			"cannot launch workers; jobs that do not fit the running workers will be refused")
		return err
	}
	deadline := time.NewTimer(p.opts.SpawnWait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		ws := p.workers[spec.ID]
		ok := ws != nil && p.aliveLocked(ws, time.Now())
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			p.forgetLaunch(spec.ID)
			return fmt.Errorf("worker %s did not register within %s", spec.ID, p.opts.SpawnWait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Pool) forgetLaunch(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ws := p.workers[id]; ws != nil && ws.seen.IsZero() && ws.tl.Len() == 0 {
		delete(p.workers, id)
	}
}

// keepLocalWorkers launches the configured local workers that are not
// already running: <host>-1 … <host>-N.
func (p *Pool) keepLocalWorkers(ctx context.Context) error {
	if p.opts.Workers <= 0 {
		return nil
	}
	if p.opts.Launcher == nil {
		return ErrNoLauncher
	}
	var missing []string
	p.mu.Lock()
	now := time.Now()
	for n := 1; n <= p.opts.Workers; n++ {
		id := p.opts.Host + "-" + strconv.Itoa(n)
		if ws := p.workers[id]; ws != nil && p.aliveLocked(ws, now) {
			continue
		}
		missing = append(missing, id)
		ws := p.workers[id]
		if ws == nil {
			ws = newWorkerState(id, 0)
			p.workers[id] = ws
		}
		ws.launched = now
	}
	p.mu.Unlock()
	sort.Strings(missing)
	errs := make(chan error, len(missing))
	for _, id := range missing {
		go func() {
			errs <- p.launch(ctx, WorkerSpec{ID: id, Host: p.opts.Host, Threads: p.opts.Threads})
		}()
	}
	var msgs []string
	for range missing {
		if err := <-errs; err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		return errors.New(strings.Join(msgs, "; "))
	}
	return nil
}
