package serverpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	// ReserveRAM makes the worker hold its RAM on Host in the world.
	ReserveRAM bool
	// OnDemand marks a worker launched for a job that did not fit: the pool
	// stops it when it has been idle for a while.
	OnDemand bool
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
	args := []string{
		"--id", spec.ID, "--host", spec.Host, "--threads", strconv.Itoa(spec.Threads),
		"--nats", l.NATS, "--log-format", "json",
	}
	if spec.ReserveRAM {
		args = append(args, "--reserve-ram")
	}
	if spec.OnDemand {
		args = append(args, "--on-demand")
	}
	args = append(args, l.Args...)
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
