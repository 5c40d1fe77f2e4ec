package serverpool_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/serverpool"
)

// A launch into a worker process that answers that it runs that worker
// already (a launch asked again while the worker set itself up) is a
// launch; another refusal is an error that says why.
func TestLaunchIntoProcess(t *testing.T) {
	t.Parallel()
	b := brokertest.New(t)
	nc := b.Connect(t)
	svc, err := micro.AddService(nc, micro.Config{Name: "fakeprocess", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	answer := func(sub string, h micro.HandlerFunc) {
		if err := svc.AddEndpoint(strings.ReplaceAll(sub, ".", "_"), h, micro.WithEndpointSubject(sub)); err != nil {
			t.Fatal(err)
		}
	}
	answer(broker.ProcessSubject("fp", "status"), func(r micro.Request) { _ = r.Respond([]byte(`{}`)) })
	answer(broker.ProcessSubject("fp", "launch"), func(r micro.Request) {
		switch {
		case strings.Contains(string(r.Data()), `"running"`):
			_ = r.Error("409", "start worker running: this process already runs that worker", nil)
		default:
			_ = r.Error("400", "no such host", nil)
		}
	})
	l := &serverpool.LocalLauncher{Process: "fp", Conn: b.Connect(t), Logger: zerolog.Nop(), Bin: "/nonexistent", LogDir: t.TempDir()}
	if err := l.Launch(context.Background(), broker.WorkerSpec{ID: "running", Host: "home", Threads: 1}); err != nil {
		t.Errorf("a worker the process runs already: %v, want launched", err)
	}
	err = l.Launch(context.Background(), broker.WorkerSpec{ID: "other", Host: "home", Threads: 1})
	if err == nil || !strings.Contains(err.Error(), "no such host") {
		t.Errorf("a refused launch: %v, want the process's reason", err)
	}
}

// A process is running until it exits, and has exited once it is a zombie
// its parent has not reaped: an adopted worker process is not the pool's
// child, and its new parent may never reap it.
func TestLocalLauncherSeesAnExit(t *testing.T) {
	t.Parallel()
	var l serverpool.LocalLauncher
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if l.Exited(pid) {
		t.Fatal("a running process is said to have exited")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie.
	deadline := time.Now().Add(5 * time.Second)
	for !l.Exited(pid) {
		if time.Now().After(deadline) {
			t.Fatal("a killed process, not reaped, is not said to have exited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Wait()
	if !l.Exited(pid) {
		t.Error("a reaped process is not said to have exited")
	}
}
