// Package e2e runs HVMind's programs as real processes against a real
// broker, kills them with SIGKILL, and checks what a user would see.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hvmind-e2e-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/...")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// freeAddr returns a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a program running for a test.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a program until the test ends (then SIGKILL).
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, name, args...)
}

// startEnv is start with more environment variables.
func startEnv(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &syncBuffer{}, done: make(chan struct{})}
	path := name
	if !strings.Contains(name, "/") {
		if _, err := os.Stat(bin(name)); err == nil {
			path = bin(name)
		} else if lp, err := exec.LookPath(name); err == nil {
			path = lp
		} else {
			t.Skipf("%s not installed (make tools installs it)", name)
		}
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(append(os.Environ(), "HVMIND_LOG_FORMAT=json"), env...)
	// Own process group, so that SIGKILL of the group takes launched workers.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("output of %s %v:\n%s", name, args, p.out.String())
		}
		keepLog(t, name, p)
	})
	return p
}

// keepLog writes a program's output to HVMIND_E2E_LOGS/<test>-<program>-<pid>.log
// when that variable names a folder: the timeline of a long run, to read
// after it.
func keepLog(t *testing.T, name string, p *proc) {
	dir := os.Getenv("HVMIND_E2E_LOGS")
	if dir == "" {
		return
	}
	file := fmt.Sprintf("%s-%s-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), filepath.Base(name), p.cmd.Process.Pid)
	if err := os.WriteFile(filepath.Join(dir, file), []byte(p.out.String()), 0o644); err != nil {
		t.Logf("keep the log of %s: %v", name, err)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) signal(sig os.Signal) { _ = p.cmd.Process.Signal(sig) }

func (p *proc) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		// A Go program prints every goroutine's stack on SIGQUIT: its
		// log then says what it was waiting for.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("process %v did not exit within %s (sent SIGQUIT: its goroutines are in its output)", p.cmd.Args, d)
	}
}

// run runs a program to completion and returns its output and exit code.
func run(t *testing.T, stdin string, name string, args ...string) (string, string, int) {
	t.Helper()
	return runIn(t, stdin, nil, name, args...)
}

// runEnv is run with more environment variables and no input.
func runEnv(t *testing.T, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	return runIn(t, "", env, name, args...)
}

func runIn(t *testing.T, stdin string, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path := bin(name)
	if _, err := os.Stat(path); err != nil {
		path = name
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out.String(), errb.String(), code
}

// cluster is a pool (with its embedded broker) and the processes around it.
type cluster struct {
	t      *testing.T
	addr   string
	url    string
	data   string
	pool   *proc
	pgArgs []string
	// env is added to the environment of the programs the helpers run
	// (credentials).
	env []string
}

// startPool starts hvmind-pool with an embedded broker and waits until its
// service answers.
func startPool(t *testing.T, args ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, addr: freeAddr(t), data: t.TempDir(), pgArgs: args}
	c.url = "nats://" + c.addr
	c.restartPool()
	t.Cleanup(func() { killWorkers(c.data) })
	return c
}

func (c *cluster) restartPool() {
	c.t.Helper()
	args := append([]string{"--listen", c.addr, "--data", c.data, "--worker-bin", bin("hvmind-worker"),
		"--heartbeat", "200ms", "--log-level", "debug",
		// Timing precision is the benchmark's business: a loaded test
		// machine gets a wide tolerance.
		"--tolerance", "250ms"}, c.pgArgs...)
	c.pool = start(c.t, "hvmind-pool", args...)
	c.waitPool()
}

func (c *cluster) waitPool() {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, code := runIn(c.t, "", c.env, "hvmind-manager", "--nats", c.url, "status"); code == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("pool did not answer; its output:\n%s", c.pool.out.String())
}

// killWorkers SIGKILLs every worker process that logs into the data dir:
// the pool launches them detached, so they outlive it.
func killWorkers(dataDir string) {
	pids, _ := exec.Command("pgrep", "-f", bin("hvmind-worker")).Output()
	for _, f := range strings.Fields(string(pids)) {
		var pid int
		_, _ = fmt.Sscan(f, &pid)
		if pid > 0 && belongsTo(pid, dataDir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// belongsTo reports whether a worker process logs into the data dir (its
// stdout is the log file the pool opened there).
func belongsTo(pid int, dataDir string) bool {
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", pid))
	return err == nil && strings.HasPrefix(target, dataDir)
}

func (c *cluster) manager(args ...string) (string, string, int) {
	c.t.Helper()
	return runIn(c.t, "", c.env, "hvmind-manager", append([]string{"--nats", c.url}, args...)...)
}

// connect opens a NATS connection to the cluster's broker.
func (c *cluster) connect() (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}

// records reads every completion record stored so far, by job id; it fails
// the test if a job has two. On a cluster that just lost a node, the
// stream's new leader may answer late: it reads until it has as many
// records as the stream said it held.
func (c *cluster) records() map[string]job.Job {
	c.t.Helper()
	_, js := c.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		cons jetstream.Consumer
		info *jetstream.ConsumerInfo
		err  error
	)
	for {
		cons, err = js.OrderedConsumer(ctx, broker.StreamDone, jetstream.OrderedConsumerConfig{})
		if err == nil {
			info, err = cons.Info(ctx)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			c.t.Fatalf("read the records: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	out := map[string]job.Job{}
	for read := uint64(0); read < info.NumPending; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if ctx.Err() != nil {
				c.t.Fatalf("read the records: %d of %d: %v", read, info.NumPending, err)
			}
			continue
		}
		for m := range batch.Messages() {
			read++
			j, err := job.Parse(m.Data())
			if err != nil {
				c.t.Fatalf("unreadable record: %s", m.Data())
			}
			if _, dup := out[j.ID]; dup {
				c.t.Errorf("two completion records for job %s", j.ID)
			}
			out[j.ID] = j
		}
		if ctx.Err() != nil {
			c.t.Fatalf("read the records: %d of %d in 30 s", read, info.NumPending)
		}
	}
	return out
}

// waitRecords waits until every id has a record and returns them.
func (c *cluster) waitRecords(timeout time.Duration, ids ...string) map[string]job.Job {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs := c.records()
		missing := 0
		for _, id := range ids {
			if _, ok := recs[id]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return recs
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d of %d jobs have no record after %s", missing, len(ids), timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitWorkers waits until n workers are registered.
func (c *cluster) waitWorkers(n int) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, _, code := c.manager("status", "--json")
		if code == 0 && strings.Count(out, `"alive": true`) >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("%d workers did not register", n)
}

func ms(d time.Duration) float64 { return job.Millis(time.Now().Add(d)) }

// keepLogs copies the *.log files of a data dir (the worker processes'
// logs) to HVMIND_E2E_LOGS when that variable names a folder.
func keepLogs(t *testing.T, dataDir string) {
	dir := os.Getenv("HVMIND_E2E_LOGS")
	if dir == "" {
		return
	}
	files, _ := filepath.Glob(filepath.Join(dataDir, "*", "*.log"))
	more, _ := filepath.Glob(filepath.Join(dataDir, "*.log"))
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		name := strings.ReplaceAll(t.Name(), "/", "_") + "-" + filepath.Base(f)
		_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
}

// natsServer is an external `nats-server -js` on a free loopback port,
// its store in a directory of the test's.
type natsServer struct {
	url, store string
	args       []string
	proc       *proc
}

// startNATS starts one, with extra flags.
func startNATS(t *testing.T, extra ...string) *natsServer {
	t.Helper()
	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	n := &natsServer{url: "nats://" + addr, store: t.TempDir()}
	n.args = append([]string{"-js", "-a", "127.0.0.1", "-p", port, "-sd", n.store}, extra...)
	n.proc = start(t, "nats-server", n.args...)
	return n
}

// restart starts it again, on the same address and store.
func (n *natsServer) restart(t *testing.T) {
	t.Helper()
	n.proc = start(t, "nats-server", n.args...)
}
