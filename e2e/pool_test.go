package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world"
)

// The README's first steps: a pool with workers, a dispatch that prints its
// record with the caller's own fields, nats sub 'hvmind.>' that shows the
// jobs, their records and a worker joining, and nothing on an idle pool.
func TestDispatchPrintsRecordAndKeepsFields(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--workers", "2", "--threads", "8")
	c.waitWorkers(2)
	sub := start(t, "nats", "--server", c.url, "sub", "hvmind.>")
	// Subscribed once it shows a probe.
	nc, _ := c.connect()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(sub.out.String(), "hvmind.probe"); {
		if time.Now().After(deadline) {
			t.Fatalf("nats sub 'hvmind.>' shows no probe: %s", sub.out.String())
		}
		_ = nc.Publish("hvmind.probe", []byte("{}"))
		time.Sleep(50 * time.Millisecond)
	}
	// An idle pool is quiet: its workers' beats (every 200 ms here) stay
	// in the registry; what shows is the pool's read of the hosts' RAM
	// ledger, every five beats (1 s here, 5 s by default).
	time.Sleep(300 * time.Millisecond)
	idleFrom := len(sub.out.String())
	time.Sleep(2 * time.Second)
	idle := sub.out.String()[idleFrom:]
	if n := strings.Count(idle, "Received on"); n > 3 || strings.Count(idle, `Received on "hvmind.world.ram"`) != n {
		t.Errorf("nats sub 'hvmind.>' on an idle pool shows:\n%s", idle)
	}
	start(t, "hvmind-worker", "--nats", c.url, "--id", "byhand-1", "--threads", "2", "--heartbeat", "200ms")
	c.waitWorkers(3)

	out, errOut, code := c.manager("dispatch", `{"task":"sleep","threads":5,"duration":300,"note":"mine","expect":{ "a" : [1, 2] }}`)
	if code != 0 {
		t.Fatalf("dispatch exit %d: %s %s", code, out, errOut)
	}
	j, err := job.Parse([]byte(strings.TrimSpace(out)))
	if err != nil {
		t.Fatalf("record %q: %v", out, err)
	}
	if j.Status != job.StatusDone || j.Worker == "" || j.ActualStartTime == 0 {
		t.Errorf("record %s", out)
	}
	if d := j.ActualEndTime - j.ActualStartTime; d < 299 || d > 350 {
		t.Errorf("a 300 ms sleep took %.1f ms", d)
	}
	if !strings.Contains(out, `"note":"mine"`) || !strings.Contains(out, `"expect":{ "a" : [1, 2] }`) {
		t.Errorf("caller's fields not kept byte-for-byte: %s", out)
	}
	// nats sub shows readable job traffic.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !(strings.Contains(sub.out.String(), "hvmind.jobs.") && strings.Contains(sub.out.String(), "hvmind.done.")) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"hvmind.jobs.", "hvmind.done.", `"note":"mine"`, "hvmind.workers.byhand-1", `"event":"joined"`} {
		if !strings.Contains(sub.out.String(), want) {
			t.Errorf("nats sub 'hvmind.>' does not show %s", want)
		}
	}
	// The pool is a micro service.
	ls, _, code := run(t, "", "nats", "--server", c.url, "micro", "ls")
	if code != 0 || !strings.Contains(ls, "hvmind-pool") {
		t.Errorf("nats micro ls: %s", ls)
	}
}

func TestBadInputGetsClearErrors(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--workers", "1", "--threads", "4", "--spawn=false")
	c.waitWorkers(1)
	past := fmt.Sprintf("%.0f", ms(-time.Minute))
	soon := ms(2 * time.Second)
	for _, tc := range []struct {
		name, input, want string
		code              int
	}{
		{"malformed", `{"task":"sleep",`, "malformed job", 2},
		{"zero threads", `{"task":"sleep","threads":0}`, "threads must be a positive integer", 1},
		{"negative threads", `{"task":"sleep","threads":-2}`, "threads must be a positive integer", 1},
		{"unknown task", `{"task":"mine-bitcoin","threads":1}`, `unknown task "mine-bitcoin"`, 1},
		{"end before start", fmt.Sprintf(`{"task":"sleep","threads":1,"startTime":%.0f,"endTime":%.0f}`, soon+1000, soon), "endTime is before startTime", 1},
		{"start in the past", `{"task":"sleep","threads":1,"startTime":` + past + `}`, "startTime is already in the past", 1},
		{"too many threads", `{"task":"sleep","threads":5}`, "no worker has the threads free", 1},
		{"negative minCores", `{"task":"sleep","threads":1,"minCores":-1}`, "minCores must not be negative", 1},
		{"fractional minCores", `{"task":"sleep","threads":1,"minCores":1.5}`, "minCores must be an integer", 2},
		{"batch that cannot fit", fmt.Sprintf(`[{"id":"fits","task":"sleep","threads":3,"startTime":%.0f,"duration":100},{"id":"nope","task":"sleep","threads":3,"startTime":%.0f,"duration":100}]`, soon, soon+50), "job 1 (nope)", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := c.manager("dispatch", tc.input)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q, stdout %q; want exit %d and %q", code, errOut, out, tc.code, tc.want)
			}
		})
	}
	// A batcher option out of range is refused before anything runs.
	if _, errOut, code := c.manager("foodnstuff", "--utilisation", "1.5"); code != 2 || !strings.Contains(errOut, "utilisation 1.5: want a share of the threads") {
		t.Errorf("--utilisation 1.5: exit %d, stderr %q; want exit 2 and the allowed range", code, errOut)
	}
	// Nothing of the refused batch was kept: its first job has no record and
	// the worker's threads are free for the same window.
	out, errOut, code := c.manager("dispatch", fmt.Sprintf(`{"task":"sleep","threads":4,"startTime":%.0f,"duration":100}`, soon+20))
	if code != 0 {
		t.Fatalf("a refused batch left a reservation behind: %s %s", out, errOut)
	}
	if _, ok := c.records()["fits"]; ok {
		t.Error("a job of the refused batch ran")
	}
}

// kill -9 the pool (and its embedded broker) while jobs are queued; start it
// again: the jobs run on time and their records are collected.
func TestKillPoolWhileJobsQueued(t *testing.T) {
	t.Parallel()
	// Timing precision is the benchmark's business; a loaded test machine
	// gets a wide tolerance here.
	c := startPool(t, "--workers", "2", "--threads", "16")
	c.waitWorkers(2)
	t0 := ms(4 * time.Second)
	var batch []string
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("q%02d", i)
		ids = append(ids, id)
		s := t0 + float64(i)*50
		batch = append(batch, fmt.Sprintf(`{"id":%q,"task":"sleep","threads":2,"startTime":%.3f,"endTime":%.3f}`, id, s, s+100))
	}
	disp := start(t, bin("hvmind-manager"), "--nats", c.url, "dispatch", "["+strings.Join(batch, ",")+"]")
	time.Sleep(1500 * time.Millisecond)
	c.pool.kill()
	time.Sleep(500 * time.Millisecond)
	c.restartPool()
	recs := c.waitRecords(20*time.Second, ids...)
	for _, id := range ids {
		r := recs[id]
		if r.Status != job.StatusDone {
			t.Errorf("job %s: %s (%s)", id, r.Status, r.Reason)
		}
		if d := (r.ActualStartTime - r.StartTime) * 1000; d < 0 || d > 250000 {
			t.Errorf("job %s started %.0f µs off", id, d)
		}
	}
	// The dispatching manager reconnected and printed every record.
	disp.wait(t, 20*time.Second)
	if n := strings.Count(disp.out.String(), `"status":"done"`); n != len(ids) {
		t.Errorf("the waiting manager printed %d of %d records:\n%s", n, len(ids), disp.out.String())
	}
	// The restarted pool saw the records: nothing in flight.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _, _ := c.manager("status", "--json")
		if strings.Contains(st, `"jobs_in_flight": 0`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool still has jobs in flight: %s", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A pool whose embedded broker holds the queues of hundreds of workers
// stops without waiting for the broker to stop each queue (about 10 ms
// each: 21 s at 2,000 workers), and every job queued on its workers runs
// once it is started again.
func TestPoolStopDoesNotWaitForEveryQueueAndLosesNone(t *testing.T) {
	t.Parallel()
	const workers = 200
	c := startPool(t, "--workers", strconv.Itoa(workers), "--threads", "1", "--worker-process", "many")
	c.waitWorkers(workers)
	t0 := ms(15 * time.Second)
	var batch, ids []string
	for i := range workers {
		id := fmt.Sprintf("s%03d", i)
		ids = append(ids, id)
		s := t0 + float64(i)*5
		batch = append(batch, fmt.Sprintf(`{"id":%q,"task":"sleep","threads":1,"startTime":%.3f,"duration":10}`, id, s))
	}
	if _, errOut, code := c.manager("dispatch", "--timeout", "1ms", "["+strings.Join(batch, ",")+"]"); code != 0 && !strings.Contains(errOut, "records") {
		t.Fatalf("dispatch: exit %d: %s", code, errOut)
	}
	c.pool.signal(syscall.SIGTERM)
	c.pool.wait(t, 30*time.Second)
	if out := c.pool.out.String(); !strings.Contains(out, "still stopping its consumers") {
		t.Errorf("the pool waited for its broker to stop every queue:\n%s", out[max(0, len(out)-2000):])
	}
	c.restartPool()
	recs := c.waitRecords(40*time.Second, ids...)
	for _, id := range ids {
		if r := recs[id]; r.Status != job.StatusDone {
			t.Errorf("job %s: %s (%s)", id, r.Status, r.Reason)
		}
	}
}

// A worker started by hand, killed with SIGKILL and started again with the
// same id: jobs whose time passed are missed, later ones run, and a job
// that was running when it died is not run twice.
func TestKillWorkerAndRestartSameID(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--spawn=false")
	wargs := []string{"--nats", c.url, "--id", "hand-1", "--threads", "4", "--heartbeat", "200ms", "--tolerance", "250ms"}
	w := start(t, "hvmind-worker", wargs...)
	c.waitWorkers(1)
	now := ms(0)
	jobs := fmt.Sprintf(`[
	 {"id":"running","task":"sleep","threads":1,"startTime":%.3f,"duration":3000},
	 {"id":"passed","task":"sleep","threads":1,"startTime":%.3f,"duration":100},
	 {"id":"later","task":"sleep","threads":1,"startTime":%.3f,"duration":100}]`, now+700, now+1800, now+6000)
	if out, errOut, code := c.manager("dispatch", "--timeout", "1ms", jobs); code != 1 || !strings.Contains(errOut, "not received") {
		t.Fatalf("dispatch: %d %s %s", code, out, errOut)
	}
	time.Sleep(1200 * time.Millisecond) // "running" has started
	w.kill()
	time.Sleep(1500 * time.Millisecond) // "passed" passes while it is down
	start(t, "hvmind-worker", wargs...)
	recs := c.waitRecords(15*time.Second, "running", "passed", "later")
	if r := recs["running"]; r.Status != job.StatusMissed || r.ActualStartTime != 0 {
		t.Errorf("job running when the worker died: %s (%s), want missed and not run again", r.Status, r.Reason)
	}
	if r := recs["passed"]; r.Status != job.StatusMissed {
		t.Errorf("job whose start passed while the worker was down: %s (%s), want missed", r.Status, r.Reason)
	}
	if r := recs["later"]; r.Status != job.StatusDone {
		t.Errorf("job after the restart: %s (%s), want done", r.Status, r.Reason)
	}
}

// Workers before the pool, the pool before the broker: it all connects.
func TestAnyStartOrderWithExternalBroker(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	url := "nats://" + addr
	host, port, _ := strings.Cut(addr, ":")
	_ = host
	w := start(t, "hvmind-worker", "--nats", url, "--id", "early", "--threads", "4")
	poolData := t.TempDir()
	pl := start(t, "hvmind-pool", "--nats", url, "--data", poolData, "--spawn=false")
	time.Sleep(time.Second)
	start(t, "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", t.TempDir())
	c := &cluster{t: t, url: url, pool: pl}
	c.waitPool()
	c.waitWorkers(1)
	out, errOut, code := c.manager("dispatch", `{"task":"sleep","threads":4,"duration":50}`)
	if code != 0 || !strings.Contains(out, `"worker":"early"`) {
		t.Fatalf("dispatch on an external broker: %d %s %s", code, out, errOut)
	}
	// A graceful stop of the worker deregisters it.
	w.signal(syscall.SIGTERM)
	w.wait(t, 10*time.Second)
	var st struct {
		Workers []struct{ ID string } `json:"workers"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _, _ := c.manager("status", "--json")
		_ = json.Unmarshal([]byte(out), &st)
		if len(st.Workers) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(st.Workers) != 0 {
		t.Errorf("a stopped worker is still listed: %+v", st.Workers)
	}
}

// SIGTERM while a job runs: the worker finishes it and records it.
func TestGracefulWorkerStopFinishesRunningJob(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--spawn=false")
	w := start(t, "hvmind-worker", "--nats", c.url, "--id", "graceful", "--threads", "2")
	c.waitWorkers(1)
	disp := start(t, bin("hvmind-manager"), "--nats", c.url, "dispatch", `{"id":"long","task":"sleep","threads":1,"duration":1500}`)
	time.Sleep(500 * time.Millisecond)
	w.signal(syscall.SIGTERM)
	w.wait(t, 10*time.Second)
	r := c.waitRecords(5*time.Second, "long")["long"]
	if r.Status != job.StatusDone || r.ActualEndTime-r.ActualStartTime < 1499 {
		t.Errorf("running job after SIGTERM: %s (%s), ran %.0f ms", r.Status, r.Reason, r.ActualEndTime-r.ActualStartTime)
	}
	disp.wait(t, 10*time.Second)
}

// A worker holds its RAM on its world host while it lives; the pool gives
// it back when a killed worker's heartbeats stop. A host without room
// refuses a worker.
func TestWorkerRAMInTheWorld(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--spawn=false")
	ramUsed := func() string {
		out, _, code := run(t, "", "nats", "--server", c.url, "req", "hvmind.world.server", "home", "--raw")
		if code != 0 {
			t.Fatalf("world server: %s", out)
		}
		var s struct {
			RAMUsed float64 `json:"ramUsed"`
		}
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("world server reply %q: %v", out, err)
		}
		return fmt.Sprint(s.RAMUsed)
	}
	// newgame's home has 8 GB: 4 threads.
	_, errOut, code := run(t, "", "hvmind-worker", "--nats", c.url, "--id", "big", "--host", "home", "--threads", "5", "--reserve")
	if code == 0 || !strings.Contains(errOut, "not enough free RAM") {
		t.Fatalf("a 5-thread worker on an 8 GB host: exit %d, %s", code, errOut)
	}
	w := start(t, "hvmind-worker", "--nats", c.url, "--id", "fits", "--host", "home", "--threads", "4", "--reserve", "--heartbeat", "200ms")
	c.waitWorkers(1)
	if got := ramUsed(); got != "7" {
		t.Fatalf("home's ramUsed with a 4-thread worker: %s GB, want 7", got)
	}
	w.kill()
	deadline := time.Now().Add(10 * time.Second)
	for ramUsed() != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("RAM of a killed worker not given back: %s GB used", ramUsed())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// On a new game (hosts of 2 to 9 threads): a worker launched on the
// smallest host that fits each job, a job too big for any host split over
// the workers there are, a job too big for everything refused, and idle
// on-demand workers stopped with their RAM given back.
func TestWorkersOnDemandSplitAndIdleStop(t *testing.T) {
	t.Parallel()
	// Idle for 3 s, a worker stops: long enough for the checks between
	// the jobs on a busy machine (1 s was not, once).
	c := startPool(t, "--size-policy", "exact", "--idle-stop", "3s", "--scenario", "newgame")
	worldRAM := func(host string) float64 {
		out, _, code := run(t, "", "nats", "--server", c.url, "req", "hvmind.world.server", host, "--raw")
		var s struct {
			RAMUsed float64 `json:"ramUsed"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &s) != nil {
			t.Fatalf("world server %s: %s", host, out)
		}
		return s.RAMUsed
	}
	// Two jobs at once: 2 threads go to n00dles (2 free), 9 to foodnstuff
	// (the first of the 9-thread hosts).
	a := start(t, bin("hvmind-manager"), "--nats", c.url, "dispatch", `{"id":"a","task":"sleep","threads":2,"duration":1500}`)
	b := start(t, bin("hvmind-manager"), "--nats", c.url, "dispatch", `{"id":"b","task":"sleep","threads":9,"duration":1500}`)
	recs := c.waitRecords(20*time.Second, "a", "b")
	if recs["a"].Worker != "n00dles-1" || recs["b"].Worker != "foodnstuff-1" {
		t.Errorf("launched on %s and %s, want n00dles-1 and foodnstuff-1", recs["a"].Worker, recs["b"].Worker)
	}
	if n, f := worldRAM("n00dles"), worldRAM("foodnstuff"); n != 3.5 || f != 15.75 {
		t.Errorf("world RAM held by the workers: n00dles %v, foodnstuff %v; want 3.5 and 15.75", n, f)
	}
	a.wait(t, 5*time.Second)
	b.wait(t, 5*time.Second)
	// 11 threads: no host has them free, the two workers together do.
	out, errOut, code := c.manager("dispatch", `{"id":"d","task":"sleep","threads":11,"duration":200,"tag":"x"}`)
	if code != 0 {
		t.Fatalf("split dispatch: %d %s %s", code, out, errOut)
	}
	d, err := job.Parse([]byte(strings.TrimSpace(out)))
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := d.Get("parts")
	if d.ID != "d" || d.Threads != 11 || d.Status != job.StatusDone || strings.Count(string(parts), `"of":"d"`) != 2 {
		t.Errorf("split job's merged record: %s", out)
	}
	// A batch refused after launching a worker for one of its jobs leaves
	// no worker behind: 9 threads fit foodnstuff-1, the next 9 a new
	// worker on harakiri-sushi, 60 nothing.
	soon := ms(3 * time.Second)
	_, errOut, code = c.manager("dispatch", fmt.Sprintf(`[{"task":"sleep","threads":9,"startTime":%.0f,"duration":100},
	 {"task":"sleep","threads":9,"startTime":%.0f,"duration":100},{"task":"sleep","threads":60,"startTime":%.0f,"duration":100}]`, soon, soon, soon))
	if code == 0 || !strings.Contains(errOut, "job 2") {
		t.Fatalf("a batch with a job too big: exit %d, %s", code, errOut)
	}
	if !strings.Contains(c.pool.out.String(), `"worker":"harakiri-sushi-1"`) {
		t.Fatal("no worker was launched on harakiri-sushi for the refused batch")
	}
	for deadline := time.Now().Add(10 * time.Second); worldRAM("harakiri-sushi") != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the worker launched for a refused batch still holds %v GB", worldRAM("harakiri-sushi"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// 61 threads: more than every host together (60): workers are launched on
	// the largest hosts to split it over, then it is refused all the same.
	_, errOut, code = c.manager("dispatch", `{"id":"e","task":"sleep","threads":61,"duration":100}`)
	if code == 0 || !strings.Contains(errOut, "job 0 (e)") || !strings.Contains(errOut, "no worker has the threads free") {
		t.Errorf("a job too big for everything: exit %d, %s", code, errOut)
	}
	// Idle for 3 s: both stop and their RAM goes back.
	deadline := time.Now().Add(15 * time.Second)
	for worldRAM("n00dles") != 0 || worldRAM("foodnstuff") != 0 {
		if time.Now().After(deadline) {
			st, _, _ := c.manager("status", "--json")
			t.Fatalf("idle workers not stopped: n00dles %v GB, foodnstuff %v GB used; status %s", worldRAM("n00dles"), worldRAM("foodnstuff"), st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A worker process name that cannot be a subject token is refused before
// the pool starts anything.
func TestBadWorkerProcessName(t *testing.T) {
	t.Parallel()
	_, errOut, code := run(t, "", "hvmind-pool", "--data", t.TempDir(), "--listen", freeAddr(t), "--worker-process", "a.b")
	if code == 0 || !strings.Contains(errOut, `--worker-process "a.b"`) {
		t.Fatalf("exit %d, stderr %q; want a clear refusal", code, errOut)
	}
	// The same names for the worker itself, refused before it waits for a
	// broker that is not there.
	for _, args := range [][]string{{"--process", "a.b"}, {"--id", "a.b", "--threads", "2"}} {
		_, errOut, code := run(t, "", "hvmind-worker", append(args, "--nats", "nats://"+freeAddr(t))...)
		if code == 0 || !strings.Contains(errOut, args[0]+` "a.b": want 1-128 letters`) {
			t.Errorf("hvmind-worker %v: exit %d, stderr %q; want a clear refusal", args, code, errOut)
		}
	}
}

// hvmind-pool --fill-hosts --worker-process: a worker on every host, all in
// one worker process; jobs with minCores go only to hosts with the cores;
// kill -9 the process and the pool starts it again and refills the hosts.
func TestWorkerProcessFillsHostsAndHonoursMinCores(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--scenario", "reference-880", "--fill-hosts", "--worker-process", "local",
		"--hosts", "home,n00dles,foodnstuff")
	c.waitWorkers(3)
	status := func() []string {
		out, _, code := run(t, "", "nats", "--server", c.url, "req", "hvmind.procs.local.status", "", "--raw")
		var st struct {
			Workers []string `json:"workers"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return nil
		}
		return st.Workers
	}
	if got := strings.Join(status(), ","); got != "foodnstuff-1,home-1,n00dles-1" {
		t.Fatalf("workers in the worker process: %q", got)
	}
	// Two threads fit n00dles, the smallest worker; with minCores 3 only
	// home (3 cores) may take them. No host has 4.
	out, errOut, code := c.manager("dispatch", `{"id":"any","task":"sleep","threads":2,"duration":50}`)
	if code != 0 || !strings.Contains(out, `"worker":"n00dles-1"`) {
		t.Fatalf("plain job: exit %d, %s %s", code, out, errOut)
	}
	out, errOut, code = c.manager("dispatch", `{"id":"cored","task":"sleep","threads":2,"duration":50,"minCores":3}`)
	if code != 0 || !strings.Contains(out, `"worker":"home-1"`) || !strings.Contains(out, `"minCores":3`) {
		t.Fatalf("job with minCores 3: exit %d, %s %s", code, out, errOut)
	}
	_, errOut, code = c.manager("dispatch", `{"id":"too-cored","task":"sleep","threads":2,"duration":50,"minCores":4}`)
	if code == 0 || !strings.Contains(errOut, "4 cores") {
		t.Fatalf("job with minCores 4: exit %d, %s", code, errOut)
	}

	// kill -9 the worker process while an operation runs in the world:
	// its three workers go, and come back under the same ids, and the
	// operation, which the process's death did not stop, is taken up and
	// lands on time.
	begin := ms(300 * time.Millisecond)
	landing := begin + 4000
	op := fmt.Sprintf(`{"id":"op","task":"weaken","args":["n00dles"],"threads":1,"startTime":%.3f,"duration":4000,"endTime":%.3f}`, begin, landing)
	if out, errOut, code := c.manager("dispatch", "--timeout", "1ms", op); code != 1 || !strings.Contains(errOut, "not received") {
		t.Fatalf("dispatch: %d %s %s", code, out, errOut)
	}
	time.Sleep(time.Until(time.UnixMilli(int64(begin))) + 500*time.Millisecond)
	killedAt := ms(0)
	pids, _ := exec.Command("pgrep", "-f", "--", "--process local").Output()
	killed := 0
	for _, f := range strings.Fields(string(pids)) {
		var pid int
		_, _ = fmt.Sscan(f, &pid)
		if pid > 0 && belongsTo(pid, c.data) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("%d worker processes found, want 1", killed)
	}
	r := c.waitRecords(30*time.Second, "op")["op"]
	var res world.Result
	_ = json.Unmarshal(r.Result, &res)
	landing = max(landing, res.StartedAt+res.DurationRealMs) // its endTime, or the world's weaken time
	if r.Status != job.StatusDone || res.JobID != "op" || r.ActualStartTime > killedAt || r.ActualEndTime < landing-1 || r.ActualEndTime > landing+250 {
		t.Errorf("the operation running when its process was killed: %s (%s) %s, started %.0f ms before the kill, landed %.0f ms after its landing; want done, started before, landed on time",
			r.Status, r.Reason, r.Result, killedAt-r.ActualStartTime, r.ActualEndTime-landing)
	}
	// The same workers take the jobs (on home: minCores).
	deadline := time.Now().Add(40 * time.Second)
	for {
		out, _, code = c.manager("dispatch", `{"task":"sleep","threads":2,"duration":50,"minCores":3}`)
		if code == 0 && strings.Contains(out, `"worker":"home-1"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no job ran on home-1 after the worker process was killed: %s; workers %v", out, status())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got := strings.Join(status(), ","); got != "foodnstuff-1,home-1,n00dles-1" {
		t.Errorf("workers in the worker process after the kill: %q, want the same three", got)
	}
}

// kill -9 of an external nats-server while a worker runs a job, and the
// server back a few seconds later: the worker ran the job through the
// outage, and its record says done. The pool, which heard no heartbeat
// meanwhile, does not store a guess ("missed: its worker was gone") that
// would overtake it.
func TestBrokerOutageKeepsTheWorkersRecord(t *testing.T) {
	t.Parallel()
	srv := startNATS(t)
	url := srv.url
	w := start(t, "hvmind-worker", "--nats", url, "--id", "steady", "--threads", "4", "--heartbeat", "200ms", "--tolerance", "250ms")
	_ = w
	poolData := t.TempDir()
	c := &cluster{t: t, url: url, data: poolData}
	c.pool = start(t, "hvmind-pool", "--nats", url, "--data", poolData, "--spawn=false", "--heartbeat", "200ms", "--tolerance", "250ms")
	c.waitPool()
	c.waitWorkers(1)
	// A job starting in 1.5 s that runs 6 s; the server dies at 1 s and
	// comes back at 5 s, while the job runs.
	job := fmt.Sprintf(`{"id":"through-outage","task":"sleep","threads":2,"startTime":%.0f,"duration":6000}`, ms(1500*time.Millisecond))
	if _, errOut, code := run(t, "", "hvmind-manager", "--nats", url, "dispatch", "--timeout", "100ms", job); code == 0 && errOut != "" {
		t.Logf("dispatch: %s", errOut)
	}
	time.Sleep(time.Second)
	srv.proc.kill()
	time.Sleep(4 * time.Second)
	srv.restart(t)
	recs := c.waitRecords(30*time.Second, "through-outage")
	r := recs["through-outage"]
	if r.Status != "done" {
		t.Fatalf("the job ran through the outage, its record says %s: %s%s", r.Status, r.Reason, r.Error)
	}
}

// kill -9 of a worker in the middle of a world operation. Killing the
// program does not stop what it started: a worker that comes back takes
// the operation up (worker.Resumer) and it lands on schedule, its record
// done with the world's result. One that does not come back has its
// operation settled, not guessed: its record says it had begun and the
// world applied nothing, and the world refuses its finish from then on
// (the pool settles it once the worker misses its heartbeats, in seconds,
// not after the 30 s a guess waits for).
func TestKilledWorkersOperationIsTakenUpOrSettled(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--spawn=false", "--speed", "60") // a weaken of a few seconds
	nc, _ := c.connect()
	wc := world.NewClient(nc)
	before, err := wc.Server(context.Background(), "joesguns")
	if err != nil {
		t.Fatal(err)
	}
	// Each holds its threads' RAM on a host of its own, as the world
	// wants of whoever begins an operation.
	args := func(id, host string) []string {
		return []string{"--nats", c.url, "--id", id, "--host", host, "--reserve", "--threads", "4", "--heartbeat", "200ms", "--tolerance", "250ms"}
	}
	back := start(t, "hvmind-worker", args("comes-back", "foodnstuff")...)
	gone := start(t, "hvmind-worker", args("stays-gone", "joesguns")...)
	c.waitWorkers(2)
	// Three threads each: one on each worker. They land at their endTime,
	// long after the world's weaken time, like a batch's weakens.
	s := ms(700 * time.Millisecond)
	end := s + 5000
	jobs := fmt.Sprintf(`[
	 {"id":"weaken-back","task":"weaken","args":["joesguns"],"threads":3,"startTime":%.3f,"duration":5000,"endTime":%.3f},
	 {"id":"weaken-gone","task":"weaken","args":["joesguns"],"threads":3,"startTime":%.3f,"duration":5000,"endTime":%.3f}]`, s, end, s, end)
	if out, errOut, code := c.manager("dispatch", "--timeout", "1ms", jobs); code != 1 || !strings.Contains(errOut, "not received") {
		t.Fatalf("dispatch: %d %s %s", code, out, errOut)
	}
	time.Sleep(1200 * time.Millisecond) // both weakens have begun
	back.kill()
	gone.kill()
	killed := time.Now()
	start(t, "hvmind-worker", args("comes-back", "foodnstuff")...)
	recs := c.waitRecords(30*time.Second, "weaken-back", "weaken-gone")
	t.Logf("both records %s after the kill", time.Since(killed).Round(100*time.Millisecond))

	r := recs["weaken-back"]
	var res world.Result
	if r.Status != job.StatusDone || json.Unmarshal(r.Result, &res) != nil || res.JobID != "weaken-back" {
		t.Fatalf("weaken-back: %s (%s) %s, want done by the worker that came back, with the world's result", r.Status, r.Reason, r.Result)
	}
	if r.ActualStartTime < s-1 || r.ActualStartTime > s+250 {
		t.Errorf("weaken-back: actual start %.0f ms after its start time, want its start in the process that was killed", r.ActualStartTime-s)
	}
	if d := r.ActualEndTime - max(end, res.StartedAt+res.DurationRealMs); d < -1 || d > 250 {
		t.Errorf("weaken-back: landed %.0f ms after its landing (its endTime, or the end of the world's weaken time)", d)
	}
	r = recs["weaken-gone"]
	if r.Status != job.StatusFailed || !strings.Contains(r.Reason, "had begun") {
		t.Errorf("weaken-gone: %s (%s), want failed: it had begun and was settled", r.Status, r.Reason)
	}
	if _, err := wc.FinishAt(context.Background(), "weaken-gone", 0, 0); !errors.Is(err, world.ErrSettled) {
		t.Errorf("weaken-gone: a finish after the settle: %v, want ErrSettled", err)
	}
	if time.Since(killed) > 15*time.Second {
		t.Errorf("the records came %s after the kill; a settle needs no 30 s silence", time.Since(killed).Round(100*time.Millisecond))
	}
	after, err := wc.Server(context.Background(), "joesguns")
	if err != nil || after.HackDifficulty != res.SecurityAfter || !(after.HackDifficulty < before.HackDifficulty) {
		t.Errorf("joesguns security %v (%v), want %v from %v: the one weaken taken up applied", after.HackDifficulty, err, res.SecurityAfter, before.HackDifficulty)
	}
}

// The broker's store wiped under a running pool (an external nats-server
// restarted on an empty directory): the pool creates its streams and
// buckets again, and jobs run again without restarting anything.
func TestWipedStoreIsRecreated(t *testing.T) {
	t.Parallel()
	srv := startNATS(t)
	url := srv.url
	poolData := t.TempDir()
	c := &cluster{t: t, url: url, data: poolData}
	t.Cleanup(func() { killWorkers(poolData) })
	c.pool = start(t, "hvmind-pool", "--nats", url, "--data", poolData, "--worker-bin", bin("hvmind-worker"),
		"--workers", "1", "--threads", "4", "--heartbeat", "200ms", "--tolerance", "250ms")
	c.waitPool()
	c.waitWorkers(1)
	if out, errOut, code := c.manager("dispatch", `{"task":"sleep","threads":2,"duration":50}`); code != 0 {
		t.Fatalf("dispatch before the wipe: %d %s %s", code, out, errOut)
	}
	nc, _ := c.connect()
	wc := world.NewClient(nc)
	before, err := wc.Server(context.Background(), "n00dles")
	if err != nil {
		t.Fatal(err)
	}
	srv.proc.kill()
	if err := os.RemoveAll(srv.store); err != nil {
		t.Fatal(err)
	}
	srv.restart(t)
	wiped := time.Now()
	for {
		out, errOut, code := c.manager("dispatch", "--timeout", "5s", `{"task":"sleep","threads":2,"duration":50}`)
		if code == 0 && strings.Contains(out, `"status":"done"`) {
			t.Logf("a job ran %s after the wipe", time.Since(wiped).Round(100*time.Millisecond))
			break
		}
		if time.Since(wiped) > 45*time.Second {
			t.Fatalf("no job ran within 45 s of the wipe: %d %s %s", code, out, errOut)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The world kept its state: it stored it again from memory.
	for {
		after, err := wc.Server(context.Background(), "n00dles")
		if err == nil {
			if after.MoneyAvailable != before.MoneyAvailable || after.HackDifficulty != before.HackDifficulty {
				t.Errorf("n00dles after the wipe %+v, want as before %+v", after, before)
			}
			break
		}
		if time.Since(wiped) > 45*time.Second {
			t.Fatalf("the world does not answer 45 s after the wipe: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// And it stores changes again (the first may find the bucket gone
	// and be refused, "retry").
	for {
		_, err := wc.ReserveRAM(context.Background(), world.RAMRequest{Host: "foodnstuff", Owner: "after-wipe", Threads: 1})
		if err == nil {
			break
		}
		if !world.Retryable(err) || time.Since(wiped) > 45*time.Second {
			t.Fatalf("a world change after the wipe: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
