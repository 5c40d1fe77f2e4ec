package live_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/live"
)

// The real executor (executor/hvmind.js) runs in node, in a fake of the
// game (executor/testdata/fakegame.mjs: operation times hack 200 ms, grow
// 320 ms, weaken 400 ms; a hack steals 100 a thread), connected to a real
// embedded broker over WebSocket; the tests ask it as HVMind does.

// fakeHackMs is the fake game's hack time.
const fakeHackMs = 200

type gameRig struct {
	t      *testing.T
	dir    string
	listen string
	ws     string
	emb    *broker.Embedded
	nc     *nats.Conn
	ex     *live.Executor
	stdin  io.WriteCloser
	out    *lineLog
	served string // the URL the executor was downloaded from
	node   string
	svc    *live.Service

	mu       sync.Mutex
	landings []live.Landing
	answer   func(live.Landing) bool
	// observe: the test only watches the landings; a service answers.
	observe bool
	games   []string
}

// lineLog keeps the fake game's output lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
}

func (l *lineLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// setupGame starts a broker and the executor in the fake game, given the
// broker's URL as its argument.
func setupGame(t *testing.T) *gameRig { return setupGameWith(t, false) }

// setupGameWith starts a broker and the executor in the fake game; served,
// the executor is downloaded from live.Handler, as a player installs it,
// and started without an argument.
func setupGameWith(t *testing.T, served bool) *gameRig {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("these tests run the executor in node (20.10 or later), which is not installed: install Debian's nodejs, or node from nodejs.org")
	}
	r := &gameRig{t: t, dir: t.TempDir(), listen: freeAddr(t), ws: freeAddr(t), out: &lineLog{}}
	r.startBroker()
	t.Cleanup(func() { r.emb.Shutdown() })
	nc, err := broker.Connect(context.Background(), r.emb.URL(), "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r.nc = nc
	hello, err := nc.Subscribe(live.HelloSubject, func(m *nats.Msg) {
		var h live.Hello
		if json.Unmarshal(m.Data, &h) == nil && h.Game != "" {
			r.mu.Lock()
			defer r.mu.Unlock()
			if !slices.Contains(r.games, h.Game) {
				r.games = append(r.games, h.Game)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hello.Unsubscribe() })
	sub, err := live.HandleLandings(nc, func(l live.Landing) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.landings = append(r.landings, l)
		if r.observe || (r.answer != nil && !r.answer(l)) {
			return errors.New("not now")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	r.node = node
	brokerURL, from := r.emb.WebSocketURL(), ""
	if served {
		_, port, err := net.SplitHostPort(r.ws)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		srv := httptest.NewServer(live.Handler(p))
		t.Cleanup(srv.Close)
		brokerURL, r.served = "", srv.URL
		from = srv.URL + "/" + live.ExecutorFile
	}
	g := r.startFakeGame(brokerURL, from)
	r.stdin = g.stdin
	r.waitFor(10*time.Second, "the executor's hello", func() bool { return len(r.gamesHeard()) > 0 })
	r.ex = live.NewExecutor(nc, r.gamesHeard()[0])
	// Ready once it answers; and once its first pass has rooted what the
	// player's BruteSSH.exe allows.
	r.waitFor(10*time.Second, "the executor to answer and root", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		s, err := r.ex.State(ctx)
		return err == nil && rooted(s, "foodnstuff")
	})
	return r
}

// fakeGame is a node process running the fake game.
type fakeGame struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

func (g *fakeGame) stop() {
	_ = g.stdin.Close()
	_ = g.cmd.Process.Kill()
	_ = g.cmd.Wait()
}

// startFakeGame starts a fake game whose executor is given brokerURL as
// its argument (none when empty) and is read from from (a URL; empty: the
// source's). Its output lines go to the rig's log; it stops with the test.
func (r *gameRig) startFakeGame(brokerURL string, from ...string) *fakeGame {
	t := r.t
	t.Helper()
	args := []string{"--experimental-websocket", "executor/testdata/fakegame.mjs", brokerURL}
	if len(from) > 0 && from[0] != "" {
		args = append(args, from[0])
	}
	cmd := exec.Command(r.node, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			r.out.add(s.Text())
			t.Log("fake game: " + s.Text())
		}
	}()
	g := &fakeGame{cmd: cmd, stdin: stdin}
	t.Cleanup(g.stop)
	return g
}

// gamesHeard are the games whose executors said hello, first first.
func (r *gameRig) gamesHeard() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.games)
}

func (r *gameRig) startBroker() {
	r.t.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: r.listen, DataDir: r.dir, WebSocket: r.ws, Logger: zerolog.Nop()})
	if err != nil {
		r.t.Fatal(err)
	}
	r.emb = emb
}

func (r *gameRig) send(cmd string) {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, cmd+"\n"); err != nil {
		r.t.Fatal(err)
	}
}

func (r *gameRig) waitFor(d time.Duration, what string, ok func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			r.t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *gameRig) landingsOf(id string) []live.Landing {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []live.Landing
	for _, l := range r.landings {
		if l.ID == id {
			out = append(out, l)
		}
	}
	return out
}

func (r *gameRig) run(req live.RunRequest) live.RunReply {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rep, err := r.ex.Run(ctx, req)
	if err != nil {
		r.t.Fatalf("run %s: %v", req.ID, err)
	}
	return rep
}

func (r *gameRig) state() live.State {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := r.ex.State(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

func rooted(s live.State, host string) bool {
	for _, srv := range s.Servers {
		if srv.Hostname == host {
			return srv.HasAdminRights
		}
	}
	return false
}

func TestExecutorReportsTheGameAndRootsWhatItCan(t *testing.T) {
	t.Parallel()
	r := setupGame(t)
	offset, rtt, s, err := r.ex.Offset(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// One machine: one clock.
	if offset < -float64(rtt.Milliseconds())-5 || offset > float64(rtt.Milliseconds())+5 {
		t.Errorf("offset %.1f ms with a round trip of %s, on one machine", offset, rtt)
	}
	if s.Version != live.Version || s.Port != live.ResultPort {
		t.Errorf("version %d port %d", s.Version, s.Port)
	}
	var names []string
	for _, srv := range s.Servers {
		names = append(names, srv.Hostname)
	}
	if got := strings.Join(names, ","); got != "home,n00dles,foodnstuff,fortress" {
		t.Errorf("servers %s, want every server reachable from home, home first", got)
	}
	for host, want := range map[string]bool{"home": true, "n00dles": true, "foodnstuff": true, "fortress": false} {
		if rooted(s, host) != want {
			t.Errorf("%s rooted %v, want %v (the player owns BruteSSH.exe only; fortress needs 5 ports)", host, !want, want)
		}
	}
	if s.Player.Skills.Hacking != 10 || s.Player.Mults.HackingMoney != 1 || s.Player.Player().HackingExp != 100 {
		t.Errorf("player %+v", s.Player)
	}
}

func TestExecutorLandsAnOperationAtItsTimeAndReportsItUntilAnswered(t *testing.T) {
	t.Parallel()
	r := setupGame(t)
	// The first two reports go unanswered: the executor sends it again.
	seen := 0
	r.answer = func(l live.Landing) bool { seen++; return seen > 2 }
	s := r.state()
	landAt := s.Now + 600
	rep := r.run(live.RunRequest{ID: "job-1", Op: "hack", Host: "foodnstuff", Target: "n00dles", Threads: 3, LandAt: landAt})
	if rep.PID <= 0 || rep.DurationMs != fakeHackMs || rep.Already {
		t.Fatalf("run: %+v", rep)
	}
	if rep.LandsAt != landAt && (rep.LandsAt < landAt-1 || rep.LandsAt > landAt+1) {
		t.Errorf("lands at %.1f, asked %.1f", rep.LandsAt, landAt)
	}
	again := r.run(live.RunRequest{ID: "job-1", Op: "hack", Host: "foodnstuff", Target: "n00dles", Threads: 3, LandAt: landAt})
	if !again.Already || again.PID != rep.PID {
		t.Errorf("a second run of job-1 started another: %+v", again)
	}
	r.waitFor(5*time.Second, "three reports of job-1", func() bool { return len(r.landingsOf("job-1")) >= 3 })
	l := r.landingsOf("job-1")[0]
	if l.Result != 300 || l.Op.Op != "hack" || l.Host != "foodnstuff" || l.Target != "n00dles" || l.Threads != 3 {
		t.Errorf("landing %+v", l)
	}
	if l.LandedAt < landAt-1 || l.LandedAt > landAt+150 {
		t.Errorf("landed at %.1f, %.1f ms from its landAt", l.LandedAt, l.LandedAt-landAt)
	}
	if l.After == nil || l.After.MoneyAvailable != 1e6-300 {
		t.Errorf("the target after: %+v", l.After)
	}
	// Answered: no more reports, and a run of its id is answered with it.
	time.Sleep(1500 * time.Millisecond)
	n := len(r.landingsOf("job-1"))
	time.Sleep(1500 * time.Millisecond)
	if m := len(r.landingsOf("job-1")); m != n {
		t.Errorf("reported %d more times once answered", m-n)
	}
	late := r.run(live.RunRequest{ID: "job-1", Op: "hack", Host: "foodnstuff", Target: "n00dles", Threads: 3})
	if late.Landed == nil || late.Landed.Result != 300 {
		t.Errorf("a run of a landed job: %+v", late)
	}
	if ops := r.state().Ops; len(ops) != 0 {
		t.Errorf("operations still running: %+v", ops)
	}
}

func TestExecutorRefusesWhatTheGameCannotRun(t *testing.T) {
	t.Parallel()
	r := setupGame(t)
	cases := []struct {
		name string
		req  live.RunRequest
		want string
	}{
		{"no RAM for the threads", live.RunRequest{ID: "a", Op: "weaken", Host: "n00dles", Target: "n00dles", Threads: 3}, "not enough free RAM"},
		{"a host without root", live.RunRequest{ID: "b", Op: "weaken", Host: "fortress", Target: "n00dles", Threads: 1}, "cannot copy"},
		{"an unknown operation", live.RunRequest{ID: "c", Op: "share", Host: "home", Target: "n00dles", Threads: 1}, "unknown operation"},
		{"no threads", live.RunRequest{ID: "d", Op: "grow", Host: "home", Target: "n00dles"}, "positive whole number"},
		{"no id", live.RunRequest{Op: "grow", Host: "home", Target: "n00dles", Threads: 1}, "no id"},
	}
	for _, tc := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := r.ex.Run(ctx, tc.req)
		cancel()
		if !errors.Is(err, live.ErrExecutor) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an executor error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestExecutorKillsAnOperationBeforeItLands(t *testing.T) {
	t.Parallel()
	r := setupGame(t)
	s := r.state()
	r.run(live.RunRequest{ID: "w", Op: "weaken", Host: "home", Target: "n00dles", Threads: 10, LandAt: s.Now + 800})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	k, err := r.ex.Kill(ctx, "w")
	if err != nil || !k.Killed {
		t.Fatalf("kill: %+v %v", k, err)
	}
	time.Sleep(1200 * time.Millisecond)
	if l := r.landingsOf("w"); len(l) != 0 {
		t.Errorf("a killed operation landed: %+v", l)
	}
	for _, srv := range r.state().Servers {
		if srv.Hostname == "home" && srv.RAMUsed != 0 {
			t.Errorf("home uses %.2f GB after the kill", srv.RAMUsed)
		}
		if srv.Hostname == "n00dles" && srv.HackDifficulty != 5 {
			t.Errorf("n00dles's security %.3f: the killed weaken applied", srv.HackDifficulty)
		}
	}
	if k, err := r.ex.Kill(ctx, "never"); err != nil || !k.Unknown {
		t.Errorf("kill of an unknown id: %+v %v", k, err)
	}
}

func TestExecutorCarriesOnAcrossABrokerRestartAndItsOwnRestart(t *testing.T) {
	t.Parallel()
	r := setupGame(t)
	s := r.state()
	// Lands while the broker is away.
	r.run(live.RunRequest{ID: "g", Op: "grow", Host: "home", Target: "n00dles", Threads: 2, LandAt: s.Now + 500})
	r.emb.Shutdown()
	time.Sleep(1500 * time.Millisecond)
	r.startBroker()
	r.waitFor(15*time.Second, "the grow's landing after the broker came back", func() bool { return len(r.landingsOf("g")) > 0 })
	if l := r.landingsOf("g")[0]; l.Result != 1.5 {
		t.Errorf("grow landing %+v", l)
	}

	// The executor killed while an operation runs, and started again: the
	// new one takes it up from the game's processes and reports it.
	s = r.state()
	r.run(live.RunRequest{ID: "h", Op: "weaken", Host: "home", Target: "n00dles", Threads: 1, LandAt: s.Now + 1500})
	r.send("kill-executor")
	r.waitFor(5*time.Second, "the executor to end", func() bool { return r.out.has("executor killed") })
	time.Sleep(300 * time.Millisecond)
	r.send("start-executor")
	r.waitFor(10*time.Second, "the weaken's landing reported by the new executor", func() bool { return len(r.landingsOf("h")) > 0 })
	l := r.landingsOf("h")[0]
	if l.Op.Op != "weaken" || l.Host != "home" || l.Target != "n00dles" || l.Result != 0.05 {
		t.Errorf("landing taken up: %+v", l)
	}
	if !strings.Contains(mustJSON(t, l), `"pid"`) {
		t.Errorf("landing without its pid: %s", mustJSON(t, l))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExecutorInstalledFromThePoolFindsItsBrokerAndScripts(t *testing.T) {
	t.Parallel()
	r := setupGameWith(t, true)
	r.send("wgets")
	r.waitFor(5*time.Second, "the executor's downloads", func() bool { return r.out.has("wgets [") })
	for _, f := range []string{"hvmind-hack.js", "hvmind-grow.js", "hvmind-weaken.js"} {
		if !r.out.has(r.served + "/" + f) {
			t.Errorf("the executor did not download %s from %s", f, r.served)
		}
	}
	s := r.state()
	r.run(live.RunRequest{ID: "x", Op: "hack", Host: "n00dles", Target: "n00dles", Threads: 1, LandAt: s.Now + 300})
	r.waitFor(5*time.Second, "the hack's landing", func() bool { return len(r.landingsOf("x")) > 0 })
}

func TestHandlerServesTheScripts(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(live.Handler(9443))
	defer srv.Close()
	get := func(path string) (int, string) {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	code, body := get("/hvmind.js")
	if code != 200 || !strings.Contains(body, `const BROKER_URL = "ws://`+host+`:9443";`) || !strings.Contains(body, `const SERVED_FROM = "`+srv.URL+`";`) {
		t.Errorf("GET /hvmind.js: %d, without the addresses filled in", code)
	}
	for path, want := range map[string]int{"/hvmind-hack.js": 200, "/hvmind-weaken.js": 200, "/executor/hvmind.js": 404, "/package.json": 404, "/": 404} {
		if code, _ := get(path); code != want {
			t.Errorf("GET %s: %d, want %d", path, code, want)
		}
	}
	if got, want := strings.Join(live.InstallCommands("10.0.0.2:7464"), " | "), "wget http://10.0.0.2:7464/hvmind.js hvmind.js | run hvmind.js"; got != want {
		t.Errorf("install commands %q", got)
	}
}
