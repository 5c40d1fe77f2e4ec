package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// The command line as the README writes it: flags before or after the
// command and its arguments, a mistyped command refused as one, settings
// from the environment for a command's own flags, bad values refused.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	c := startPool(t)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		out  string // in stdout or stderr
	}{
		{"flags after the command", []string{"status", "--json", "--nats", c.url}, nil, 0, `"workers"`},
		{"flags before the command", []string{"--nats", c.url, "status", "--json"}, nil, 0, `"workers"`},
		{"a command's flag from the environment", []string{"status", "--nats", c.url}, []string{"HVMIND_JSON=true"}, 0, `"workers"`},
		{"cancel ID --batch", []string{"cancel", "nobatch", "--batch", "--nats", c.url}, nil, 1, "batch nobatch"},
		{"a mistyped command", []string{"statsu", "--nats", c.url}, nil, 2, `"statsu" is neither a command`},
		{"a flag the command lacks", []string{"status", "--jsn", "--nats", c.url}, nil, 2, "flag provided but not defined: -jsn"},
		{"an argument the command does not take", []string{"status", "extra", "--nats", c.url}, nil, 2, "status takes no arguments"},
		{"no command", []string{"--nats", c.url}, nil, 2, "a command is required"},
		{"capacity over a window", []string{"capacity", "--for", "1s", "--nats", c.url}, nil, 0, "free in all"},
		{"capacity with a negative length", []string{"capacity", "--for", "-1s", "--nats", c.url}, nil, 2, "must not be negative"},
		{"capacity at a time that is no time", []string{"capacity", "--at", "soon", "--nats", c.url}, nil, 2, `--at "soon"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runEnv(t, tc.env, "hvmind-manager", tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.out) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, tc.code, tc.out)
			}
		})
	}
	for _, args := range [][]string{{"--speed", "0"}, {"--idle-stop", "-1s"}, {"--threads", "0"}} {
		_, errOut, code := runEnv(t, nil, "hvmind-pool", append([]string{"--listen", "127.0.0.1:0", "--data", t.TempDir()}, args...)...)
		if code != 2 || !strings.Contains(errOut, args[0]) {
			t.Errorf("hvmind-pool %v: exit %d, %q; want exit 2 naming the flag", args, code, errOut)
		}
	}
}

// A worker whose broker is not there when it starts (launched just as its
// pool and embedded broker stopped) waits for it no longer than its
// broker grace, as one whose broker goes away later, and says why; with
// no grace it waits for it.
func TestWorkerGivesUpOnABrokerNeverReached(t *testing.T) {
	t.Parallel()
	url := "nats://" + freeAddr(t) // nothing listens there
	for _, args := range [][]string{{"--id", "lonely-1"}, {"--process", "lonely"}} {
		start := time.Now()
		_, errOut, code := run(t, "", "hvmind-worker", append(args, "--nats", url, "--broker-grace", "1s")...)
		took := time.Since(start)
		if code != 1 || !strings.Contains(errOut, "unreachable for the grace of 1s") || took > 10*time.Second {
			t.Errorf("hvmind-worker %v: exit %d after %s, %q; want exit 1 after about 1 s, saying the broker was unreachable", args, code, took.Round(time.Millisecond), errOut)
		}
	}
	w := start(t, "hvmind-worker", "--id", "patient-1", "--nats", url)
	select {
	case <-w.done:
		t.Errorf("a worker with no grace stopped waiting for its broker: %s", w.out.String())
	case <-time.After(2 * time.Second):
	}
	w.kill()
}

// SIGUSR1 asks a program what it is doing: it writes its goroutines'
// stacks and goes on.
func TestSIGUSR1WritesTheStacksAndGoesOn(t *testing.T) {
	t.Parallel()
	c := startPool(t)
	c.pool.signal(syscall.SIGUSR1)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.pool.out.String(), "github.com/hvmind/hvmind/pool.") {
		if time.Now().After(deadline) {
			t.Fatalf("no stacks in the pool's output after SIGUSR1:\n%s", c.pool.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, errOut, code := c.manager("status"); code != 0 {
		t.Fatalf("the pool stopped answering after SIGUSR1: exit %d: %s%s", code, out, errOut)
	}
}
