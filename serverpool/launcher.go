package serverpool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
)

// ErrNoLauncher means the pool was configured without a way to start workers.
var ErrNoLauncher = errors.New("the pool cannot launch workers")

// Launcher starts worker processes.
type Launcher interface {
	// Launch starts a worker; it returns once the process has started, not
	// once the worker has registered.
	Launch(ctx context.Context, spec broker.WorkerSpec) error
}

// ExitWatcher is what a Launcher may also be: one that sees the processes
// it started exit. The pool takes the workers of an exited process as gone
// at once, instead of after their missed heartbeats.
type ExitWatcher interface {
	// Exits delivers the pid of each process the launcher started, when it
	// exits. One receiver; pids are dropped while it is not receiving.
	Exits() <-chan int
}

// ProcessNamer is what a Launcher may also be: one that says in which
// worker process a worker it launched runs (its own id when it runs on
// its own).
type ProcessNamer interface {
	ProcessOf(worker string) string
}

// ProcessOf is the worker process a worker launched runs in.
func (l *LocalLauncher) ProcessOf(worker string) string {
	if l.Process != "" {
		return l.Process
	}
	return worker
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
	// Env is added to each worker's environment: the credentials (see
	// broker.Auth.Env), which a command line would show to every user.
	Env []string
	// EnvFor, when set, adds to the environment of each program launched
	// its own (after Env): a worker process's (process true, name its
	// name) or a worker's on its own (name its id). The pool sets the
	// identity it launches it with there (see broker.Identities).
	EnvFor func(name string, process bool) []string
	// Logger receives launch notices.
	Logger zerolog.Logger
	// Process, when set, runs every worker in one worker process of that
	// name (a worker process, see package worker), started on the first launch and again if
	// it has gone: one timer queue for all. Conn is then the connection the
	// launch requests go on.
	Process string
	Conn    *nats.Conn
	// ProcessArgs are extra flags for the worker process only, such as
	// --http for its metrics.
	ProcessArgs []string

	mu    sync.Mutex
	procs map[int]chan struct{} // pid -> closed when the process exits
	exits chan int              // see Exits
	// procMu serialises starting the worker process.
	procMu sync.Mutex
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

// Launch starts one worker: a process of its own, or a worker in the
// launcher's worker process.
func (l *LocalLauncher) Launch(ctx context.Context, spec broker.WorkerSpec) error {
	if l.Bin == "" {
		return ErrNoLauncher
	}
	if l.Process != "" {
		return l.launchInProcess(ctx, spec)
	}
	args := []string{
		"--id", spec.ID, "--host", spec.Host, "--threads", strconv.Itoa(spec.Threads),
		"--nats", l.NATS, "--log-format", "json",
	}
	if spec.Reserve {
		args = append(args, "--reserve")
	}
	if spec.OnDemand {
		args = append(args, "--on-demand")
	}
	pid, logPath, err := l.start("worker-"+spec.ID, l.envFor(spec.ID, false), args)
	if err != nil {
		return fmt.Errorf("launch worker %s: %w", spec.ID, err)
	}
	l.Logger.Info().Str("worker", spec.ID).Int("pid", pid).Int("threads", spec.Threads).
		Str("log", logPath).Msg("launched worker")
	return nil
}

// launchInProcess asks the worker process to start the worker, starting
// the process first if it does not answer.
func (l *LocalLauncher) launchInProcess(ctx context.Context, spec broker.WorkerSpec) error {
	if l.Conn == nil {
		return fmt.Errorf("%w: a worker process needs a connection", ErrNoLauncher)
	}
	if err := l.ensureProcess(ctx); err != nil {
		return fmt.Errorf("launch worker %s: %w", spec.ID, err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("launch worker %s: %w", spec.ID, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := l.Conn.RequestWithContext(rctx, broker.ProcessSubject(l.Process, "launch"), data)
	if err != nil {
		return fmt.Errorf("launch worker %s in process %s: %w", spec.ID, l.Process, err)
	}
	if e := msg.Header.Get(micro.ErrorHeader); e != "" {
		if msg.Header.Get(micro.ErrorCodeHeader) == "409" {
			// The process runs that worker already (a launch asked again
			// while the worker was still setting up): it is launched.
			l.Logger.Debug().Str("worker", spec.ID).Str("process", l.Process).Msg("the worker process already runs that worker")
			return nil
		}
		return fmt.Errorf("launch worker %s in process %s: %s", spec.ID, l.Process, e)
	}
	l.Logger.Info().Str("worker", spec.ID).Str("process", l.Process).Int("threads", spec.Threads).Msg("launched worker")
	return nil
}

// ensureProcess starts the worker process unless it answers, and waits
// until it does.
func (l *LocalLauncher) ensureProcess(ctx context.Context) error {
	l.procMu.Lock()
	defer l.procMu.Unlock()
	status := broker.ProcessSubject(l.Process, "status")
	if _, err := l.Conn.Request(status, nil, time.Second); err == nil {
		return nil
	}
	pid, logPath, err := l.start("process-"+l.Process, l.envFor(l.Process, true), append([]string{"--process", l.Process, "--nats", l.NATS, "--log-format", "json"}, l.ProcessArgs...))
	if err != nil {
		return fmt.Errorf("start worker process %s: %w", l.Process, err)
	}
	l.Logger.Info().Str("process", l.Process).Int("pid", pid).Str("log", logPath).Msg("launched worker process")
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := l.Conn.Request(status, nil, 250*time.Millisecond)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("worker process %s does not answer (see %s): %w", l.Process, logPath, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// envFor is the environment of one program launched, beyond Env.
func (l *LocalLauncher) envFor(name string, process bool) []string {
	if l.EnvFor == nil {
		return nil
	}
	return l.EnvFor(name, process)
}

// start runs the worker executable with args and the launcher's own, its
// output in LogDir/name.log, detached in a session of its own, with env
// added to Env.
func (l *LocalLauncher) start(name string, env, args []string) (pid int, logPath string, err error) {
	if err := os.MkdirAll(l.LogDir, 0o755); err != nil {
		return 0, "", err
	}
	logPath = filepath.Join(l.LogDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, "", err
	}
	defer logFile.Close()
	cmd := exec.Command(l.Bin, append(args, l.Args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if len(l.Env)+len(env) > 0 {
		cmd.Env = append(append(os.Environ(), l.Env...), env...)
	}
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
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
		if l.exits == nil {
			l.exits = make(chan int, 64)
		}
		exits := l.exits
		l.mu.Unlock()
		select {
		case exits <- cmd.Process.Pid:
		default:
		}
	}()
	return cmd.Process.Pid, logPath, nil
}

// Exited reports whether no process with pid runs on this machine (one
// the launcher started, or an earlier launcher: a pool that restarted
// adopts the worker processes its predecessor started). A zombie has
// exited: an adopted process is not the pool's child, and its new parent
// may be slow to reap it, or never do.
func (l *LocalLauncher) Exited(pid int) bool {
	if pid <= 0 {
		return false
	}
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	return zombie(pid)
}

// zombie reports whether pid has exited and waits for its parent to reap
// it (Linux; false where /proc does not say).
func zombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: the name may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// Exits delivers the pids of the worker processes this launcher started,
// as they exit (see ExitWatcher).
func (l *LocalLauncher) Exits() <-chan int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exits == nil {
		l.exits = make(chan int, 64)
	}
	return l.exits
}

// Pids are the processes this launcher started that have not exited, in
// no order.
func (l *LocalLauncher) Pids() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	pids := make([]int, 0, len(l.procs))
	for pid := range l.procs {
		pids = append(pids, pid)
	}
	return pids
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
