package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
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
		name    string
		args    []string
		process string // home-1's
	}{
		{name: "a process a worker", process: "home-1"},
		{name: "a worker process", args: []string{"--worker-process", "roles"}, process: "roles"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testRoles(t, tc.args, tc.process)
		})
	}
}

func testRoles(t *testing.T, args []string, process string) {
	passwords := map[string]string{"pool": "p-pool", "world": "p-world", "manager": "p-manager", "observer": "p-observer"}
	env := []string{"HVMIND_PASSWORD=" + passwords["pool"]}
	for role, pw := range passwords {
		env = append(env, "HVMIND_"+strings.ToUpper(role)+"_PASSWORD="+pw)
	}
	addr := freeAddr(t)
	c := &cluster{t: t, addr: addr, url: "nats://" + addr, data: t.TempDir(),
		env: []string{"HVMIND_USER=manager", "HVMIND_PASSWORD=" + passwords["manager"]}}
	t.Cleanup(func() { killWorkers(c.data) })
	keyFile := filepath.Join(t.TempDir(), "identity.nk")
	c.pool = startEnv(t, env, "hvmind-pool", append([]string{"--listen", addr, "--data", c.data, "--nats-config", rolesConf(t),
		"--user", "pool", "--identity-key", keyFile, "--worker-bin", bin("hvmind-worker"),
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
	refused(t, "the observer publishing a job", observer, errs, broker.JobsSubject("home-1"), `{"id":"x","task":"sleep","threads":1}`)

	// Each worker connects as itself: home-1's identity, with the
	// password the pool's key gives it, may do only home-1's work.
	seed, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := broker.NewIdentities(bytes.TrimSpace(seed))
	if err != nil {
		t.Fatal(err)
	}
	asWorker := func(process, worker string) (*nats.Conn, chan error, error) {
		return dialIdentity(t, c.url, broker.WorkerUser(process, worker), ids.Password(process, worker), broker.IdentityInbox(process, worker))
	}
	// The pool gave each its password in its environment: no command
	// line holds one, nor any log.
	for _, secret := range []string{ids.ProcessPassword(process), ids.Password(process, "home-1")} {
		pids, _ := exec.Command("pgrep", "-f", bin("hvmind-worker")).Output()
		for _, pid := range strings.Fields(string(pids)) {
			if cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline"); err == nil && strings.Contains(string(cmdline), secret) {
				t.Errorf("worker %s has a password on its command line", pid)
			}
		}
		logs, _ := os.ReadDir(filepath.Join(c.data, "logs"))
		for _, f := range logs {
			if b, _ := os.ReadFile(filepath.Join(c.data, "logs", f.Name())); strings.Contains(string(b), secret) {
				t.Errorf("log %s holds a worker's password", f.Name())
			}
		}
		if strings.Contains(c.pool.out.String(), secret) {
			t.Error("the pool's log holds a worker's password")
		}
	}
	worker, werrs, err := asWorker(process, "home-1")
	if err != nil {
		t.Fatalf("connect as home-1: %v", err)
	}
	refused(t, "a worker publishing a job to another worker", worker, werrs, broker.JobsSubject("home-2"), `{"id":"x","task":"sleep","threads":1}`)
	refused(t, "a worker publishing a job to itself", worker, werrs, broker.JobsSubject("home-1"), `{"id":"x","task":"sleep","threads":1}`)
	refused(t, "a worker calling the pool's dispatch", worker, werrs, "hvmind.pool.dispatch", `{"task":"sleep","threads":1}`)
	refused(t, "a worker cancelling through the pool", worker, werrs, "hvmind.pool.cancel", `{"id":"x"}`)
	refused(t, "a worker storing another's record", worker, werrs, "hvmind.done.home-2", `{"id":"x","status":"done"}`)
	refused(t, "a worker taking another's queue", worker, werrs,
		"$JS.API.CONSUMER.CREATE."+jobStream("home-2")+"."+broker.WorkerConsumer("home-2")+"."+broker.JobsSubject("home-2"), `{}`)
	refused(t, "a worker pulling from another's queue", worker, werrs,
		"$JS.API.CONSUMER.MSG.NEXT."+jobStream("home-2")+"."+broker.WorkerConsumer("home-2"), `{"batch":1}`)
	refused(t, "a worker making a queue whose filter the broker does not read", worker, werrs,
		"$JS.API.CONSUMER.CREATE."+jobStream("home-1")+"."+broker.WorkerConsumer("home-1"), `{"config":{"filter_subject":"`+broker.JobsSubject("home-2")+`"}}`)
	// Its records, delivered by the broker on a subject of its choosing
	// (a push consumer's delivery subject is not checked against its
	// creator's permissions): it makes no consumer at all.
	refused(t, "a worker making a consumer that delivers its records elsewhere", worker, werrs,
		"$JS.API.CONSUMER.CREATE."+broker.StreamDone+".x."+broker.DoneSubject("home-1"),
		`{"stream_name":"HVMIND_DONE","config":{"name":"x","filter_subject":"hvmind.done.home-1","deliver_subject":"hvmind.world.settle"}}`)
	refused(t, "a worker making its own queue", worker, werrs,
		"$JS.API.CONSUMER.CREATE."+jobStream("home-1")+"."+broker.WorkerConsumer("home-1")+"."+broker.JobsSubject("home-1"), `{}`)
	refused(t, "a worker reading the queued jobs", worker, werrs, "$JS.API.DIRECT.GET."+jobStream("home-2"), `{"seq":1,"next_by_subj":"`+broker.JobsSubject("home-2")+`"}`)
	refused(t, "a worker beginning another's world operation", worker, werrs, world.WorkerSubject("home-2", world.WorkerBegin),
		`{"jobId":"x","task":"hack","target":"n00dles","host":"home","owner":"home-2","threads":1}`)
	refused(t, "a worker releasing RAM on the pool's subject", worker, werrs, world.SubjectRAMRelease, `{"host":"home","owner":"home-2"}`)
	// On its own subjects, the world grants it only what is its own.
	_, err = world.NewClient(worker).As("home-1").ReleaseRAM(context.Background(), world.RAMRequest{Host: "home", Owner: "home-2"})
	if !errors.Is(err, world.ErrNotOwner) {
		t.Errorf("home-1 releasing home-2's RAM on its own subject: %v, want ErrNotOwner", err)
	}
	// It cannot listen where it was not told to.
	for len(werrs) > 0 {
		<-werrs
	}
	if _, err := worker.SubscribeSync("_INBOX.>"); err == nil {
		select {
		case err := <-werrs:
			if !strings.Contains(err.Error(), "Permissions Violation") {
				t.Errorf("a worker listening to every inbox: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("a worker listening to every inbox: no permissions violation")
		}
	}
	// Its own queue it may see.
	if js, err := jetstream.New(worker); err != nil {
		t.Fatal(err)
	} else if _, err := js.Consumer(context.Background(), jobStream("home-1"), broker.WorkerConsumer("home-1")); err != nil {
		t.Errorf("home-1 looking at its queue: %v", err)
	}
	// Another process cannot pass for home-1's, nor anyone guess.
	if _, _, err := asWorker("intruder", "home-1"); err == nil {
		t.Error("another process connected as home-1")
	}
	if _, _, err := dialIdentity(t, c.url, broker.WorkerUser(process, "home-1"), "guess", broker.IdentityInbox(process, "home-1")); err == nil {
		t.Error("a wrong password connected as home-1")
	}

	manager, merrs := dialAs(t, c.url, "manager", passwords["manager"])
	refused(t, "the manager publishing a job", manager, merrs, broker.JobsSubject("home-1"), `{"id":"x","task":"sleep","threads":1}`)
	refused(t, "the manager beginning a world operation", manager, merrs, world.SubjectBegin, `{"jobId":"x","task":"hack","target":"n00dles","host":"home","owner":"home-1","threads":1}`)
	refused(t, "the manager releasing a host's RAM", manager, merrs, world.SubjectRAMRelease, `{"host":"home","owner":"home-1"}`)
	refused(t, "the manager settling jobs", manager, merrs, world.SubjectSettle, `{"jobIds":["x"]}`)
	// It makes no consumer: one delivering the records into a worker's
	// queue would publish jobs for it.
	refused(t, "the manager making a consumer that delivers records to a worker's queue", manager, merrs,
		"$JS.API.CONSUMER.CREATE."+broker.StreamDone+".x",
		`{"stream_name":"HVMIND_DONE","config":{"name":"x","deliver_subject":"`+broker.JobsSubject("home-1")+`"}}`)
	refused(t, "the manager resetting a worker's queue", manager, merrs, "hvmind.pool.worker.home-1.queue", ``)
	// It may ask the world's questions.
	if _, err := world.NewClient(manager).Player(context.Background()); err != nil {
		t.Errorf("the manager asking the world for the player: %v", err)
	}
	// A wrong password is turned away.
	if _, err := nats.Connect(c.url, nats.UserInfo("manager", "guess")); err == nil {
		t.Error("a wrong password connected")
	}
}

// dialIdentity connects as a worker identity (its replies in its own
// inbox), and collects the permission errors the server sends.
func dialIdentity(t *testing.T, url, user, password, inbox string) (*nats.Conn, chan error, error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(nc.Close)
	return nc, errs, nil
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

// jobStream is the name of the job stream that holds a worker's queue.
func jobStream(worker string) string { return broker.JobStreamName(broker.JobStreamOf(worker)) }
