package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A broker that wants a password: the pool gets it from the environment,
// hands it to the worker processes it launches through theirs, and no
// command line (what `ps` shows every user) and no log holds it.
func TestPasswordNeverOnACommandLine(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-e2e-password"
	url := startNATS(t, "--user", "hv", "--pass", secret).url
	poolData := t.TempDir()
	t.Cleanup(func() { killWorkers(poolData) })
	creds := []string{"HVMIND_USER=hv", "HVMIND_PASSWORD=" + secret}
	pl := startEnv(t, creds, "hvmind-pool", "--nats", url, "--data", poolData, "--worker-bin", bin("hvmind-worker"),
		"--workers", "2", "--threads", "4", "--heartbeat", "200ms", "--tolerance", "250ms")
	c := &cluster{t: t, url: url, data: poolData, pool: pl, env: creds}
	c.waitPool()
	c.waitWorkers(2)
	out, errOut, code := c.manager("dispatch", `{"task":"sleep","threads":2,"duration":50}`)
	if code != 0 || !strings.Contains(out, `"status":"done"`) {
		t.Fatalf("dispatch with credentials from the environment: %d %s %s", code, out, errOut)
	}
	// Without them, the broker turns the manager away.
	if _, errOut, code := run(t, "", "hvmind-manager", "--nats", url, "status", "--timeout", "2s"); code == 0 {
		t.Errorf("status without the password succeeded: %s", errOut)
	}
	pids, _ := exec.Command("pgrep", "-f", bin("hvmind-worker")).Output()
	n := 0
	for _, pid := range strings.Fields(string(pids)) {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%s/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), poolData) && !strings.Contains(string(cmdline), url) {
			continue
		}
		n++
		if strings.Contains(string(cmdline), secret) {
			t.Errorf("worker %s has the password on its command line: %q", pid, cmdline)
		}
	}
	if n == 0 {
		t.Error("found no worker process of the pool")
	}
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(pl.out.String(), secret) {
		t.Error("the pool's log holds the password")
	}
	logs, _ := os.ReadDir(poolData + "/logs")
	for _, f := range logs {
		if b, _ := os.ReadFile(poolData + "/logs/" + f.Name()); strings.Contains(string(b), secret) {
			t.Errorf("worker log %s holds the password", f.Name())
		}
	}
}
