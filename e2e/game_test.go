package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"
)

// The pool plays the game through its executor: the fake game of the
// executor's tests (live/executor/testdata/fakegame.mjs: hack 200 ms, grow
// 320 ms, weaken 400 ms; a hack steals 100 a thread) runs the executor as
// a player installs it, downloaded from the pool, and the jobs dispatched
// to the pool land in it at their endTime, with the game's results in
// their records, across a kill -9 of the pool.
func TestPoolPlaysTheGameThroughItsExecutor(t *testing.T) {
	t.Parallel()
	ws, web := freeAddr(t), freeAddr(t)
	c := startPool(t, "--game", "--websocket", ws, "--http", web, "--worker-process", "local", "--size-policy", "host", "--fill-hosts")
	res, err := http.Get("http://" + web + "/hvmind.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /hvmind.js: %d", res.StatusCode)
	}
	game := start(t, "node", "--experimental-websocket", "../live/executor/testdata/fakegame.mjs", "", "http://"+web+"/hvmind.js")
	// Every rooted host with RAM gets a worker: home, n00dles and
	// foodnstuff (the fake player owns BruteSSH.exe).
	c.waitWorkers(3)
	_ = game
	t0 := ms(2 * time.Second)
	jobs := []map[string]any{
		{"id": "g-weaken", "task": "weaken", "args": []string{"n00dles"}, "threads": 4, "duration": 400, "startTime": t0, "endTime": t0 + 1000},
		{"id": "g-grow", "task": "grow", "args": []string{"n00dles"}, "threads": 2, "duration": 320, "startTime": t0 + 300, "endTime": t0 + 1040},
		{"id": "g-hack", "task": "hack", "args": []string{"n00dles"}, "threads": 3, "duration": 200, "startTime": t0 + 500, "endTime": t0 + 1080},
		// Lands after the pool's kill below.
		{"id": "g-late", "task": "weaken", "args": []string{"n00dles"}, "threads": 1, "duration": 400, "startTime": t0 + 600, "endTime": t0 + 4000},
	}
	batch, _ := json.Marshal(jobs)
	if out, errOut, code := runIn(t, string(batch), c.env, "hvmind-manager", "--nats", c.url, "dispatch", "-"); code != 0 {
		t.Fatalf("dispatch: %d\n%s\n%s", code, out, errOut)
	}
	recs := c.waitRecords(20*time.Second, "g-weaken", "g-grow", "g-hack")
	// The pool killed while g-late is in the game, and started again.
	time.Sleep(time.Until(time.UnixMilli(int64(t0 + 1500))))
	c.pool.kill()
	c.restartPool()
	for id, r := range c.waitRecords(30*time.Second, "g-late") {
		recs[id] = r
	}
	for _, j := range jobs {
		id := j["id"].(string)
		r := recs[id]
		if r.Status != "done" {
			t.Errorf("%s: %s (%s)", id, r.Status, r.Reason)
			continue
		}
		end := j["endTime"].(float64)
		if math.Abs(r.ActualEndTime-end) > 100 {
			t.Errorf("%s ended at %.1f, %.1f ms from its endTime", id, r.ActualEndTime, r.ActualEndTime-end)
		}
		var result struct {
			Stolen          float64 `json:"stolen"`
			GrowMultiplier  float64 `json:"growMultiplier"`
			SecurityRemoved float64 `json:"securityRemoved"`
			Host            string  `json:"host"`
		}
		if err := json.Unmarshal(r.Result, &result); err != nil {
			t.Errorf("%s: result %s: %v", id, r.Result, err)
		}
		want := map[string]string{"g-weaken": "0.2", "g-grow": "1.5", "g-hack": "300", "g-late": "0.05"}[id]
		got := fmt.Sprint(math.Round((result.Stolen+result.GrowMultiplier+result.SecurityRemoved)*1000) / 1000)
		if got != want {
			t.Errorf("%s: the game's result %s, want %s (%s)", id, got, want, r.Result)
		}
	}
}
