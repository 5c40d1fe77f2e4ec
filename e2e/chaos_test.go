package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/world"
)

// The chaos test: the batcher earns on a world at speed 60 while a driver
// kills (kill -9, one time in four SIGTERM) and restarts, at random
// moments and in random order, the broker (a real nats-server), the pool
// (with its world), the worker process and the batcher. At the end it
// audits the durable state: every job has at most one record, every world
// operation the world applied is accounted for by a record, the player's
// money is the start plus what the applied hacks stole, and it measures
// how long after each kill the money rose again.
//
// HVMIND_CHAOS_KILLS sets the number of kills (CI: 4, one of each kind;
// make chaos: 24), HVMIND_CHAOS_SCENARIO the world (newgame by default;
// make chaos: reference-880), HVMIND_CHAOS_SEED the driver's seed,
// HVMIND_CHAOS_VICTIMS a comma-separated choice among broker, pool,
// "worker process" and batcher, HVMIND_CHAOS_SIGNAL=kill no SIGTERMs, =term only SIGTERMs.
// HVMIND_E2E_LOGS, a folder, keeps every program's log.
func TestChaos(t *testing.T) {
	t.Parallel()
	kills := envInt("HVMIND_CHAOS_KILLS", 4)
	scenario := os.Getenv("HVMIND_CHAOS_SCENARIO")
	if scenario == "" {
		scenario = "newgame"
	}
	seed := uint64(envInt("HVMIND_CHAOS_SEED", int(time.Now().UnixNano()%1e6)))
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("chaos: %d kills on %s, seed %d", kills, scenario, seed)

	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	url := "nats://" + addr
	store := t.TempDir()
	brokerArgs := []string{"-js", "-a", "127.0.0.1", "-p", port, "-sd", store}
	c := &cluster{t: t, url: url, data: t.TempDir()}
	t.Cleanup(func() { killWorkers(c.data); keepLogs(t, c.data) })
	poolArgs := append([]string{"--nats", url, "--data", c.data, "--scenario", scenario, "--worker-bin", bin("hvmind-worker"),
		"--log-level", "debug"}, runFlags...)
	mgrArgs := []string{"--nats", url, "--auto", "--json"}

	srv := start(t, "nats-server", brokerArgs...)
	c.pool = start(t, "hvmind-pool", poolArgs...)
	c.waitPool()
	nc, js := c.connect()
	wc := world.NewClient(nc)
	money := func() (float64, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		pl, err := wc.Player(ctx)
		return pl.Money, err == nil
	}
	var startMoney float64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if m, ok := money(); ok {
			startMoney = m
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the world does not answer")
		}
	}
	mgr := start(t, "hvmind-manager", mgrArgs...)

	// hackLanded says when the first hack that started after since was
	// recorded done: income from work dispatched after a kill, which the
	// money alone does not tell (operations finished just before a kill
	// still land after it).
	var hacksMu sync.Mutex
	var hacks []struct{ started, recorded time.Time }
	sub, err := nc.Subscribe(broker.SubjectDone+">", func(m *nats.Msg) {
		recs, err := job.ParseMany(m.Data)
		if err != nil {
			return
		}
		now := time.Now()
		hacksMu.Lock()
		defer hacksMu.Unlock()
		for _, r := range recs {
			if r.Task == "hack" && r.Status == job.StatusDone && r.ActualStartTime > 0 {
				hacks = append(hacks, struct{ started, recorded time.Time }{time.UnixMicro(int64(r.ActualStartTime * 1000)), now})
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	hackLanded := func(since time.Time, limit time.Duration) (time.Duration, bool) {
		for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			hacksMu.Lock()
			for _, h := range hacks {
				if h.started.After(since) {
					hacksMu.Unlock()
					return h.recorded.Sub(since), true
				}
			}
			hacksMu.Unlock()
		}
		return limit, false
	}

	// earning waits until the money is above m, and says how long that took.
	earning := func(m float64, limit time.Duration) (time.Duration, bool) {
		began := time.Now()
		for time.Since(began) < limit {
			if now, ok := money(); ok && now > m {
				return time.Since(began), true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return limit, false
	}
	if _, ok := earning(startMoney, 2*time.Minute); !ok {
		t.Fatalf("no income before any kill:\n%s", mgr.out.String())
	}
	stopWatch := watchForAStall(t, nc, url)
	defer stopWatch()

	type kill struct {
		victim, signal string
		at             time.Time
		// recovery: the money rose again; newHack: a hack started after
		// the kill was recorded done.
		recovery, newHack time.Duration
		ok                bool
	}
	var done []kill
	victims := []string{"broker", "pool", "worker process", "batcher"}
	if only := os.Getenv("HVMIND_CHAOS_VICTIMS"); only != "" {
		victims = strings.Split(only, ",")
	}
	order := rng.Perm(len(victims))
	for i := range kills {
		v := victims[order[i%len(victims)]]
		if i >= len(victims) {
			v = victims[rng.IntN(len(victims))]
		}
		sig, sigName := syscall.SIGKILL, "kill -9"
		switch os.Getenv("HVMIND_CHAOS_SIGNAL") {
		case "kill":
		case "term":
			sig, sigName = syscall.SIGTERM, "SIGTERM"
		default:
			if rng.IntN(4) == 0 {
				sig, sigName = syscall.SIGTERM, "SIGTERM"
			}
		}
		time.Sleep(time.Duration(1000+rng.IntN(4000)) * time.Millisecond)
		before, _ := money()
		killed := time.Now()
		switch v {
		case "broker":
			srv.signal(sig)
			srv.wait(t, 30*time.Second)
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
			srv = start(t, "nats-server", brokerArgs...)
		case "pool":
			c.pool.signal(sig)
			c.pool.wait(t, 60*time.Second)
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
			c.pool = start(t, "hvmind-pool", poolArgs...)
		case "worker process":
			out, _ := exec.Command("pgrep", "-f", "hvmind-worker --process local --nats "+url).Output()
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, sig)
				}
			} // the pool launches it again
		case "batcher":
			mgr.signal(sig)
			mgr.wait(t, 60*time.Second)
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
			mgr = start(t, "hvmind-manager", mgrArgs...)
		}
		_, ok := earning(before, 3*time.Minute)
		recovered := time.Since(killed)
		newHack, hackOK := hackLanded(killed, 3*time.Minute)
		done = append(done, kill{v, sigName, killed, recovered, newHack, ok && hackOK})
		if !ok {
			t.Errorf("kill %d (%s of the %s): no income within 3 minutes", i+1, sigName, v)
		} else if !hackOK {
			t.Errorf("kill %d (%s of the %s): no hack started after it landed within 3 minutes", i+1, sigName, v)
		}
	}
	mgr.signal(syscall.SIGINT)
	mgr.wait(t, time.Minute)
	time.Sleep(5 * time.Second) // the last landings

	// The kills and how long after each the money rose again.
	byKind := map[string][]time.Duration{}
	hackByKind := map[string][]time.Duration{}
	for i, k := range done {
		t.Logf("kill %2d at %s: %-7s the %-14s money rose again after %6s; a hack started after the kill landed after %6s",
			i+1, k.at.UTC().Format("15:04:05.000"), k.signal, k.victim, k.recovery.Round(100*time.Millisecond), k.newHack.Round(100*time.Millisecond))
		byKind[k.victim] = append(byKind[k.victim], k.recovery)
		hackByKind[k.victim] = append(hackByKind[k.victim], k.newHack)
	}
	for _, v := range victims {
		ds, hs := byKind[v], hackByKind[v]
		if len(ds) == 0 {
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		sort.Slice(hs, func(i, j int) bool { return hs[i] < hs[j] })
		r := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
		t.Logf("%-14s kills %2d; money rose again after: median %s, worst %s; a new hack landed after: median %s, worst %s",
			v, len(ds), r(ds[len(ds)/2]), r(ds[len(ds)-1]), r(hs[len(hs)/2]), r(hs[len(hs)-1]))
	}

	// The audit, from the durable state.
	recs := c.records() // fails the test on a second record of a job
	applied := appliedOps(t, js)
	contradict, doneNotApplied, appliedNoRecord := 0, 0, 0
	stolenApplied, stolenDone := 0.0, 0.0
	for id, r := range applied {
		stolenApplied += r.Stolen
		rec, ok := recs[id]
		switch {
		case !ok:
			appliedNoRecord++
		case rec.Status != "done":
			contradict++
			if contradict <= 5 {
				t.Logf("applied, but its record says %s: %s %s (%s%s)", rec.Status, r.Task, id, rec.Reason, rec.Error)
			}
		}
	}
	for id, rec := range recs {
		if rec.Status != "done" || !strings.Contains(string(rec.Result), `"stolen"`) {
			continue
		}
		var res world.Result
		if json.Unmarshal(rec.Result, &res) == nil {
			stolenDone += res.Stolen
		}
		if _, ok := applied[id]; !ok {
			doneNotApplied++
		}
	}
	// How late the jobs started in the seconds after each kill, beside all
	// of them: a restart that starves the machine makes starts late, and
	// a late start desyncs a batch.
	// lateness is the start error of the jobs due in [from, to) that
	// started, and the latest of them.
	lateness := func(from, to float64) (n int, p50, p99, worst float64, latest job.Job) {
		var ls []float64
		for _, r := range recs {
			if r.ActualStartTime > 0 && r.StartTime >= from && r.StartTime < to {
				l := r.ActualStartTime - r.StartTime
				if len(ls) == 0 || l > latest.ActualStartTime-latest.StartTime {
					latest = r
				}
				ls = append(ls, l)
			}
		}
		if len(ls) == 0 {
			return 0, 0, 0, 0, latest
		}
		sort.Float64s(ls)
		return len(ls), ls[len(ls)/2], ls[len(ls)*99/100], ls[len(ls)-1], latest
	}
	// describe names a late job, to look it up in the logs.
	describe := func(j job.Job) string {
		return fmt.Sprintf("%s %s on %s, %s %s", j.ID, j.Task, j.Worker, j.Status, j.Reason)
	}
	n, p50, p99, worst, latest := lateness(0, math.MaxFloat64)
	t.Logf("start error of all %d jobs that started: p50 %.3f ms, p99 %.3f ms, worst %.1f ms (%s)", n, p50, p99, worst, describe(latest))
	for i, k := range done {
		from := float64(k.at.UnixMicro()) / 1000
		n, p50, p99, worst, latest := lateness(from, from+3000)
		line := fmt.Sprintf("kill %2d (%s): the %d jobs that started within 3 s after it: start error p50 %.3f ms, p99 %.3f ms, worst %.1f ms", i+1, k.victim, n, p50, p99, worst)
		if worst > 50 {
			line += " (" + describe(latest) + ")"
		}
		t.Log(line)
	}
	leftMsgs, leftEnded, leftWaiting := leftovers(t, js, recs)
	t.Logf("left in the job streams: %d messages; %d of their jobs have a record, %d have none", leftMsgs, leftEnded, leftWaiting)
	end, ok := money()
	if !ok {
		t.Fatal("the world does not answer at the end")
	}
	t.Logf("audit: %d records, %d operations applied; applied with a record other than done: %d; applied with no record: %d; done but not applied: %d",
		len(recs), len(applied), contradict, appliedNoRecord, doneNotApplied)
	t.Logf("ledger: money made $%.0f; stolen by the applied hacks $%.0f (diff $%.0f); by the done hacks' records $%.0f (diff $%.0f)",
		end-startMoney, stolenApplied, end-startMoney-stolenApplied, stolenDone, end-startMoney-stolenDone)
	if diff := end - startMoney - stolenApplied; diff > 1 || diff < -1 {
		t.Errorf("the player's money moved by $%.0f more than the applied hacks stole", diff)
	}
	if doneNotApplied > 0 {
		t.Errorf("%d records say done for operations the world never applied", doneNotApplied)
	}
	if contradict > 0 {
		t.Errorf("%d operations the world applied have a record that says otherwise", contradict)
	}
	if diff := end - startMoney - stolenDone; diff > 1 || diff < -1 {
		t.Errorf("the player's money moved by $%.0f more than the done hacks' records say", diff)
	}
}

// leftovers reads the messages left in the job streams: how many, and how
// many of the jobs in them have a record (those messages should have been
// taken off their queues) and how many have none.
func leftovers(t *testing.T, js jetstream.JetStream, recs map[string]job.Job) (msgs, ended, waiting int) {
	shown := 0
	show := func(stream string, m *jetstream.RawStreamMsg, jobs []job.Job) {
		if shown++; shown > 5 {
			return
		}
		var b strings.Builder
		for _, j := range jobs {
			r := recs[j.ID]
			fmt.Fprintf(&b, "; %s %s on %s: %s %s", j.ID, j.Task, j.Worker, r.Status, r.Reason)
		}
		t.Logf("left in %s: seq %d, %s, stored %s%s", stream, m.Sequence, m.Subject, m.Time.Format("15:04:05.000"), b.String())
	}
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range broker.JobStreamNames() {
		// A work queue takes no ordered consumer: read its messages by
		// sequence.
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted
			}
			msgs++
			if m.Header.Get(broker.HeaderCancel) != "" {
				continue
			}
			jobs, err := job.ParseMany(m.Data)
			if err != nil {
				continue
			}
			show(name, m, jobs)
			for _, j := range jobs {
				if _, ok := recs[j.ID]; ok {
					ended++
				} else {
					waiting++
				}
			}
		}
	}
	return msgs, ended, waiting
}

// appliedOps reads the world's applied operations from its bucket, by job
// id.
func appliedOps(t *testing.T, js jetstream.JetStream) map[string]world.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, world.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, "op.>", jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]world.Result{}
	for e := range w.Updates() {
		if e == nil {
			break // the values stored so far are all in
		}
		var entry struct {
			Result *world.Result `json:"result"`
		}
		if json.Unmarshal(e.Value(), &entry) != nil || entry.Result == nil {
			continue
		}
		if _, dup := out[entry.Result.JobID]; dup {
			t.Errorf("operation of job %s applied twice", entry.Result.JobID)
		}
		out[entry.Result.JobID] = *entry.Result
	}
	return out
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// watchForAStall asks the worker process its status every 250 ms, through
// the test's own connection. A worker process has been seen to stop
// reading its connection for 10 s while the broker was up. When it has
// not answered for 2 s while the broker answers the test, the watch sends
// it SIGUSR1, so that its log holds the stacks of what it was doing, and
// says so. It returns a function that stops it.
func watchForAStall(t *testing.T, nc *nats.Conn, url string) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var silentSince, dumped time.Time
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			_, err := nc.Request(broker.ProcessSubject("local", "status"), nil, 200*time.Millisecond)
			if err == nil || !nc.IsConnected() || nc.FlushTimeout(time.Second) != nil {
				silentSince = time.Time{}
				continue
			}
			if silentSince.IsZero() {
				silentSince = time.Now()
			}
			if time.Since(silentSince) < 2*time.Second || time.Since(dumped) < 10*time.Second {
				continue
			}
			out, _ := exec.Command("pgrep", "-f", "hvmind-worker --process local --nats "+url).Output()
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil && syscall.Kill(pid, syscall.SIGUSR1) == nil {
					dumped = time.Now()
					t.Logf("worker process %d has not answered its status for %s while the broker answers: its stacks are in its log (SIGUSR1)",
						pid, time.Since(silentSince).Round(time.Millisecond))
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
