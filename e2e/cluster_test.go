package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker"
)

// natsNode is one nats-server of a test cluster.
type natsNode struct {
	name, addr, monitor string
	args                []string
	proc                *proc
}

// startNATSCluster starts n nats-server processes with JetStream as one
// cluster on loopback.
func startNATSCluster(t *testing.T, n int) []*natsNode {
	t.Helper()
	nodes := make([]*natsNode, n)
	routes := make([]string, n)
	clusterAddrs := make([]string, n)
	for i := range nodes {
		clusterAddrs[i] = freeAddr(t)
		routes[i] = "nats://" + clusterAddrs[i]
	}
	for i := range nodes {
		addr, monitor := freeAddr(t), freeAddr(t)
		_, port, _ := strings.Cut(addr, ":")
		_, mport, _ := strings.Cut(monitor, ":")
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), addr: addr, monitor: monitor}
		nodes[i].args = []string{"-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", port, "-m", mport,
			"--server_name", nodes[i].name, "--cluster_name", "hvmind", "--cluster", "nats://" + clusterAddrs[i],
			"--routes", strings.Join(others, ",")}
		nodes[i].proc = start(t, "nats-server", nodes[i].args...)
	}
	return nodes
}

// metaLeader is the cluster's JetStream meta leader as node asks it ("" if
// it does not know or does not answer).
func (n *natsNode) metaLeader() string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + n.monitor + "/jsz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var jsz struct {
		Meta struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if json.NewDecoder(resp.Body).Decode(&jsz) != nil {
		return ""
	}
	return jsz.Meta.Leader
}

// A three-node NATS cluster on loopback, everything on it with three
// replicas: killing the node that leads the job streams, and then the meta
// leader, stops work for seconds only, and no job is lost or recorded
// twice.
func TestClusterSurvivesLeaderKills(t *testing.T) {
	t.Parallel()
	nodes := startNATSCluster(t, 3)
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = "nats://" + n.addr
	}
	byName := map[string]*natsNode{}
	for _, n := range nodes {
		byName[n.name] = n
	}
	deadline := time.Now().Add(30 * time.Second)
	for nodes[0].metaLeader() == "" {
		if time.Now().After(deadline) {
			t.Fatal("the cluster elected no JetStream meta leader")
		}
		time.Sleep(200 * time.Millisecond)
	}
	c := &cluster{t: t, url: strings.Join(urls, ","), data: t.TempDir()}
	c.pool = start(t, "hvmind-pool", "--nats", c.url, "--data", c.data, "--replicas", "3",
		"--workers", "2", "--threads", "4", "--spawn=false", "--worker-bin", bin("hvmind-worker"),
		"--heartbeat", "200ms", "--tolerance", "250ms", "--log-level", "debug")
	t.Cleanup(func() { killWorkers(c.data) })
	c.waitPool()
	c.waitWorkers(2)

	_, js := c.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, name := range append(broker.JobStreamNames(), broker.StreamDone, "KV_"+broker.BucketWorkers, "KV_hvmind_world") {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, info.Config.Replicas)
		}
	}

	// Jobs go in one after another, each waiting for its record, the whole
	// time: dispatch is what a user sees stop.
	type attempt struct {
		id       string
		at, took time.Duration
		ok       bool
		out      string
	}
	var (
		mu       sync.Mutex
		attempts []attempt
	)
	begin := time.Now()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("cluster-%04d", i)
			at := time.Since(begin)
			out, errOut, code := run(t, "", "hvmind-manager", "--nats", c.url, "dispatch", "--timeout", "20s",
				fmt.Sprintf(`{"id":%q,"task":"sleep","threads":1,"duration":20}`, id))
			mu.Lock()
			attempts = append(attempts, attempt{id: id, at: at, took: time.Since(begin) - at, ok: code == 0, out: out + errOut})
			mu.Unlock()
		}
	}()
	// resumed waits for a job dispatched after since to complete, and
	// returns how long after since that was.
	resumed := func(since time.Duration, what string) time.Duration {
		t.Helper()
		for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			mu.Lock()
			for _, a := range attempts {
				if a.ok && a.at >= since {
					mu.Unlock()
					return a.at + a.took - since
				}
			}
			mu.Unlock()
		}
		t.Fatalf("no job completed within 45 s of %s", what)
		return 0
	}
	resumed(0, "the start")
	time.Sleep(2 * time.Second)

	// The node that leads the most job streams.
	leads := map[string]int{}
	for _, name := range broker.JobStreamNames() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || byName[info.Cluster.Leader] == nil {
			t.Fatalf("the leader of %s: %v %+v", name, err, info.Cluster)
		}
		leads[info.Cluster.Leader]++
	}
	var victim *natsNode
	for name, n := range leads {
		if victim == nil || n > leads[victim.name] {
			victim = byName[name]
		}
	}
	killedAt := time.Since(begin)
	victim.proc.kill()
	streamLoss := resumed(killedAt, "killing "+victim.name+", the leader of job streams")
	t.Logf("killed %s, the leader of %d of the %d job streams: a job dispatched after completed %s later",
		victim.name, leads[victim.name], broker.JobStreams, streamLoss.Round(time.Millisecond))

	// Back, and caught up, before the next kill: two of three must stay.
	victim.proc = start(t, "nats-server", victim.args...)
	for deadline := time.Now().Add(30 * time.Second); victim.metaLeader() == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not rejoin the cluster", victim.name)
		}
	}
	time.Sleep(3 * time.Second)

	var leader *natsNode
	for _, n := range nodes {
		if l := n.metaLeader(); l != "" {
			leader = byName[l]
			break
		}
	}
	if leader == nil {
		t.Fatal("no meta leader")
	}
	killedAt = time.Since(begin)
	leader.proc.kill()
	metaLoss := resumed(killedAt, "killing the meta leader "+leader.name)
	t.Logf("killed %s, the meta leader: a job dispatched after completed %s later", leader.name, metaLoss.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	close(stop)
	<-done

	// Nothing lost, nothing twice: every job whose dispatch printed its
	// record has exactly one stored record (records fails on a second).
	recs := c.records()
	mu.Lock()
	defer mu.Unlock()
	ok, failed := 0, 0
	for _, a := range attempts {
		if !a.ok {
			failed++
			t.Logf("dispatch of %s at %s failed after %s: %s", a.id, a.at.Round(time.Millisecond), a.took.Round(time.Millisecond), strings.TrimSpace(a.out))
			continue
		}
		ok++
		if r, found := recs[a.id]; !found || r.Status != "done" {
			t.Errorf("job %s: dispatch printed its record, stored: %+v (found %v)", a.id, r, found)
		}
	}
	t.Logf("%d jobs done, %d dispatches failed; after the stream leader's kill %s, after the meta leader's %s",
		ok, failed, streamLoss.Round(time.Millisecond), metaLoss.Round(time.Millisecond))
	// Seen here: 6-18 s (a stream's leader election, then the dispatch's
	// copy; after a meta leader's loss, the workers' beats may stall
	// for longer and the pool refuses jobs meanwhile).
	for _, l := range []time.Duration{streamLoss, metaLoss} {
		if l > 30*time.Second {
			t.Errorf("work stopped for %s after a kill", l)
		}
	}
}
