package e2e

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// runFlags are the pool's flags in `make run`.
var runFlags = []string{"--speed", "60", "--size-policy", "host", "--fill-hosts", "--worker-process", "local", "--tolerance", "50ms"}

// make run, stopped at a random moment and started again on the same data,
// again and again (HVMIND_E2E_RUN_LOOPS times; 3 by default): every stop is
// clean and bounded (the batcher, the pool, the worker process all exit,
// nothing of the run is left running), and every start finds the world's
// RAM held by its own live workers only, and batches.
func TestRunStopStartLoop(t *testing.T) {
	t.Parallel()
	loops := 3
	if n, err := strconv.Atoi(os.Getenv("HVMIND_E2E_RUN_LOOPS")); err == nil && n > 0 {
		loops = n
	}
	c := startPool(t, runFlags...)
	for i := range loops {
		if i > 0 {
			c.restartPool()
		}
		c.waitLedgerHeldByLiveWorkers()
		// A clean stop leaves the next pool nothing to take back.
		for _, leak := range []string{"held by no live worker", "whose heartbeats stopped"} {
			if strings.Contains(c.pool.out.String(), leak) {
				t.Errorf("loop %d: the last stop left RAM held: the new pool logged %q", i, leak)
			}
		}
		// As make run does: the batcher in front, stopped with Ctrl-C.
		m := start(t, "hvmind-manager", "--nats", c.url, "foodnstuff", "--json")
		time.Sleep(time.Duration(2000+rand.IntN(5000)) * time.Millisecond)
		m.signal(syscall.SIGINT)
		m.wait(t, 60*time.Second)
		if out := m.out.String(); !strings.Contains(out, `"kind":"stopped"`) || !strings.Contains(out, `"kind":"prep"`) {
			t.Fatalf("loop %d: the batcher did not prep and stop cleanly:\n%s", i, out)
		}
		// Then the pool, as make run's trap does.
		stopAt := time.Now()
		c.pool.signal(syscall.SIGTERM)
		// Its workers' running jobs land within a few seconds at 60x.
		c.pool.wait(t, 15*time.Second)
		waitGone(t, c.addr, 15*time.Second)
		t.Logf("loop %d: the pool and its workers stopped in %s", i, time.Since(stopAt).Round(time.Millisecond))
	}
}

// waitLedgerHeldByLiveWorkers waits until every thread the world's RAM
// ledger says is held belongs to a worker the pool sees alive: nothing of
// an earlier run holds any.
func (c *cluster) waitLedgerHeldByLiveWorkers() {
	c.t.Helper()
	nc, err := nats.Connect(c.url)
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		msg, err := nc.Request("hvmind.world.ram", nil, 2*time.Second)
		if err != nil {
			last = err.Error()
			continue
		}
		var hosts []struct {
			Hostname     string         `json:"hostname"`
			Reservations map[string]int `json:"reservations"`
		}
		if err := json.Unmarshal(msg.Data, &hosts); err != nil {
			c.t.Fatalf("world ram: %v: %s", err, msg.Data)
		}
		out, _, code := c.manager("status", "--json")
		if code != 0 {
			last = out
			continue
		}
		var st struct {
			Workers []struct {
				ID    string `json:"id"`
				Alive bool   `json:"alive"`
			} `json:"workers"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			c.t.Fatalf("status: %v", err)
		}
		alive := map[string]bool{}
		for _, w := range st.Workers {
			alive[w.ID] = w.Alive
		}
		var strays []string
		held := 0
		for _, h := range hosts {
			for owner := range h.Reservations {
				held++
				if !alive[owner] {
					strays = append(strays, h.Hostname+"/"+owner)
				}
			}
		}
		if len(strays) == 0 && held > 0 {
			return
		}
		last = "held by no live worker: " + strings.Join(strays, ", ")
	}
	c.t.Fatalf("the world's RAM is not held by the live workers alone: %s", last)
}

// waitGone waits until no process that talks to the broker at addr is left.
func waitGone(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	var left []byte
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, err := exec.Command("pgrep", "-af", addr).Output()
		if err != nil { // pgrep found nothing
			return
		}
		left = out
	}
	t.Fatalf("processes of the run still there %s after the pool stopped:\n%s", d, left)
}

// The batcher started before the broker and the pool waits for them, and
// carries on across a kill -9 of the pool (and of its embedded broker):
// it never exits on its own, and earns again after the restart.
func TestManagerWaitsForThePoolAndOutlivesIt(t *testing.T) {
	t.Parallel()
	c := &cluster{t: t, addr: freeAddr(t), data: t.TempDir(), pgArgs: runFlags}
	c.url = "nats://" + c.addr
	t.Cleanup(func() { killWorkers(c.data) })
	m := start(t, "hvmind-manager", "--nats", c.url, "n00dles", "--json")
	time.Sleep(3 * time.Second)
	select {
	case <-m.done:
		t.Fatalf("the batcher exited with no broker to talk to:\n%s", m.out.String())
	default:
	}
	c.restartPool()
	stolen := func() float64 { return stolenUpTo(m.out.String()) }
	waitStolen := func(above float64, what string) float64 {
		t.Helper()
		for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if s := stolen(); s > above {
				return s
			}
			select {
			case <-m.done:
				t.Fatalf("the batcher exited %s:\n%s", what, m.out.String())
			default:
			}
		}
		t.Fatalf("the batcher stole nothing %s", what)
		return 0
	}
	waitStolen(0, "once the pool was up")
	// kill -9 of the pool, which holds the broker: every request of the
	// batcher's fails until it is back, and no record comes.
	c.pool.kill()
	time.Sleep(3 * time.Second)
	before := stolen()
	c.restartPool()
	restarted := time.Now()
	mark := len(m.out.String())
	// The batches in flight at the kill land, then the batcher batches
	// anew: a batch planned after the restart lands.
	var planned int
	for deadline := time.Now().Add(45 * time.Second); planned == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the batcher planned nothing after the pool's restart:\n%s", m.out.String()[mark:])
		}
		out := m.out.String()
		if i := strings.Index(out[mark:], `"kind":"pipeline"`); i >= 0 {
			planned = mark + i
		}
	}
	replanned := time.Since(restarted)
	after := waitStolen(max(before, stolenUpTo(m.out.String()[:planned])), "after the pool's restart")
	t.Logf("stole $%.0f before the kill; after the restart, a new pipeline in %s, its first money in %s ($%.0f)", before,
		replanned.Round(100*time.Millisecond), time.Since(restarted).Round(100*time.Millisecond), after)
	if !strings.Contains(m.out.String(), "waiting for") {
		t.Error("the batcher never said it was waiting")
	}
	// Stopped with the broker gone (the pool killed again), it lets its
	// batches land and stops, not waiting for records that cannot come
	// (it waited 30 s past the last landing).
	c.pool.kill()
	m.signal(syscall.SIGINT)
	m.wait(t, 20*time.Second)
}

// stolenUpTo is the most money a batcher's JSON events say it stole.
func stolenUpTo(out string) float64 {
	most := 0.0
	for _, line := range strings.Split(out, "\n") {
		var ev struct {
			Stats struct {
				Stolen float64 `json:"stolen"`
			} `json:"stats"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil {
			most = max(most, ev.Stats.Stolen)
		}
	}
	return most
}

// A second worker process of a name on the same broker is turned away at
// once, whatever the broker's state, and the first runs on: a pool
// restarted while the broker was away launched a third process of one
// name while two were alive.
func TestOneWorkerProcessOfAName(t *testing.T) {
	t.Parallel()
	c := startPool(t, "--spawn=false")
	first := start(t, "hvmind-worker", "--process", "twin", "--nats", c.url)
	time.Sleep(time.Second)
	out, errOut, code := run(t, "", "hvmind-worker", "--process", "twin", "--nats", c.url)
	if code == 0 || !strings.Contains(out+errOut, "already running") {
		t.Fatalf("second process of one name: exit %d: %s%s", code, out, errOut)
	}
	select {
	case <-first.done:
		t.Fatalf("the first process stopped:\n%s", first.out.String())
	default:
	}
	// Another name runs beside it.
	other := start(t, "hvmind-worker", "--process", "other", "--nats", c.url)
	time.Sleep(time.Second)
	select {
	case <-other.done:
		t.Fatalf("a process of another name stopped:\n%s", other.out.String())
	default:
	}
}
