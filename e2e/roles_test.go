package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/world"
)

// rolesConf is the roles configuration shipped in the repository.
func rolesConf(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "deploy", "nats", "hvmind-roles.conf")
}

// The system on the shipped roles configuration (the pool's embedded
// broker started with --nats-config): each role does its work, with a
// process for each worker or the workers in one worker process, and a
// role's credentials cannot do another's.
func TestRolesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{name: "a process a worker"},
		{name: "a worker process", args: []string{"--worker-process", "roles"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testRoles(t, tc.args)
		})
	}
}

func testRoles(t *testing.T, args []string) {
	passwords := map[string]string{"pool": "p-pool", "world": "p-world", "worker": "p-worker", "manager": "p-manager", "observer": "p-observer"}
	env := []string{"HVMIND_PASSWORD=" + passwords["pool"], "HVMIND_WORKER_PASSWORD=" + passwords["worker"]}
	for role, pw := range passwords {
		env = append(env, "HVMIND_"+strings.ToUpper(role)+"_PASSWORD="+pw)
	}
	addr := freeAddr(t)
	c := &cluster{t: t, addr: addr, url: "nats://" + addr, data: t.TempDir(),
		env: []string{"HVMIND_USER=manager", "HVMIND_PASSWORD=" + passwords["manager"]}}
	t.Cleanup(func() { killWorkers(c.data) })
	c.pool = startEnv(t, env, "hvmind-pool", append([]string{"--listen", addr, "--data", c.data, "--nats-config", rolesConf(t),
		"--user", "pool", "--worker-user", "worker", "--worker-bin", bin("hvmind-worker"),
		"--workers", "2", "--threads", "4", "--heartbeat", "200ms", "--tolerance", "250ms"}, args...)...)
	c.waitPool()
	c.waitWorkers(2)

	// The observer watches everything.
	observer, errs := dialAs(t, c.url, "observer", passwords["observer"])
	seen := make(chan string, 64)
	if _, err := observer.Subscribe("hvmind.>", func(m *nats.Msg) {
		select {
		case seen <- m.Subject:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := observer.Flush(); err != nil {
		t.Fatal(err)
	}
	// The manager's role dispatches, and the job runs on a worker with
	// the worker's credentials.
	out, errOut, code := c.manager("dispatch", `{"task":"sleep","threads":2,"duration":50}`)
	if code != 0 || !strings.Contains(out, `"status":"done"`) {
		t.Fatalf("dispatch as the manager: %d %s %s", code, out, errOut)
	}
	deadline := time.After(5 * time.Second)
	for got := false; !got; {
		select {
		case s := <-seen:
			got = strings.HasPrefix(s, "hvmind.done.")
		case <-deadline:
			t.Fatal("the observer saw no record on hvmind.>")
		}
	}
	// ...and changes nothing.
	refused(t, "the observer publishing a job", observer, errs, "hvmind.jobs.home-1", `{"id":"x","task":"sleep","threads":1}`)

	worker, werrs := dialAs(t, c.url, "worker", passwords["worker"])
	refused(t, "a worker publishing a job to another worker", worker, werrs, "hvmind.jobs.home-2", `{"id":"x","task":"sleep","threads":1}`)
	refused(t, "a worker calling the pool's dispatch", worker, werrs, "hvmind.pool.dispatch", `{"task":"sleep","threads":1}`)
	// A worker process lists the queues of its workers, to see that they
	// are there.
	if js, err := jetstream.New(worker); err != nil {
		t.Fatal(err)
	} else if s, err := js.Stream(context.Background(), broker.StreamJobs); err != nil {
		t.Errorf("a worker looking up the jobs stream: %v", err)
	} else {
		names := s.ConsumerNames(context.Background())
		n := 0
		for range names.Name() {
			n++
		}
		if err := names.Err(); err != nil || n < 2 {
			t.Errorf("a worker listing the workers' queues: %d, %v; want the two workers'", n, err)
		}
	}
	refused(t, "a worker cancelling through the pool", worker, werrs, "hvmind.pool.cancel", `{"id":"x"}`)

	manager, merrs := dialAs(t, c.url, "manager", passwords["manager"])
	refused(t, "the manager publishing a job", manager, merrs, "hvmind.jobs.home-1", `{"id":"x","task":"sleep","threads":1}`)
	refused(t, "the manager beginning a world operation", manager, merrs, world.SubjectBegin, `{"jobId":"x","task":"hack","target":"n00dles","host":"home","owner":"home-1","threads":1}`)
	refused(t, "the manager releasing a host's RAM", manager, merrs, world.SubjectRAMRelease, `{"host":"home","owner":"home-1"}`)
	refused(t, "the manager settling jobs", manager, merrs, world.SubjectSettle, `{"jobIds":["x"]}`)
	// It may ask the world's questions.
	if _, err := world.NewClient(manager).Player(context.Background()); err != nil {
		t.Errorf("the manager asking the world for the player: %v", err)
	}
	// A wrong password is turned away.
	if _, err := nats.Connect(c.url, nats.UserInfo("worker", "guess")); err == nil {
		t.Error("a wrong password connected")
	}
}

// dialAs connects as user, and collects the permission errors the server
// sends.
func dialAs(t *testing.T, url, user, password string) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

var refusedMu sync.Mutex

// refused publishes (as a request) and wants a permissions violation.
func refused(t *testing.T, what string, nc *nats.Conn, errs chan error, subject, data string) {
	t.Helper()
	refusedMu.Lock()
	defer refusedMu.Unlock()
	for len(errs) > 0 {
		<-errs
	}
	_, reqErr := nc.Request(subject, []byte(data), time.Second)
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
			t.Errorf("%s: %v, want a permissions violation", what, err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s: no permissions violation (request: %v)", what, reqErr)
	}
}
