package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hvmind-pool --http serves its metrics and the world's; a job with a
// start shows in them; and the Grafana dashboard shipped in deploy/grafana
// queries only metrics that are served.
func TestMetricsAndDashboard(t *testing.T) {
	t.Parallel()
	httpAddr := freeAddr(t)
	c := startPool(t, "--workers", "1", "--threads", "4", "--http", httpAddr)
	c.waitWorkers(1)
	start := time.Now().Add(300 * time.Millisecond).UnixMilli()
	out, errOut, code := c.manager("dispatch", `{"task":"sleep","threads":1,"duration":20,"startTime":`+strconv.FormatInt(start, 10)+`}`)
	if code != 0 {
		t.Fatalf("dispatch exit %d: %s %s", code, out, errOut)
	}
	var served map[string]bool
	for deadline := time.Now().Add(5 * time.Second); ; {
		served = scrapeNames(t, "http://"+httpAddr+"/metrics")
		if served["hvmind_job_end_error_seconds_count"] || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, name := range []string{"hvmind_jobs_total", "hvmind_job_start_error_seconds_count", "hvmind_job_end_error_seconds_count",
		"hvmind_world_player_money_dollars", "hvmind_world_server_security", "go_goroutines"} {
		if !served[name] {
			t.Errorf("%s: not served", name)
		}
	}
	for _, name := range dashboardMetrics(t) {
		if !served[name] {
			t.Errorf("the dashboard queries %s, which hvmind-pool does not serve", name)
		}
	}
}

// scrapeNames is the metric names url serves.
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		names[name] = true
	}
	return names
}

// dashboardMetrics are the hvmind_ metrics the shipped Grafana
// dashboard's queries name (histograms by their _bucket, _sum or _count).
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "deploy", "grafana", "hvmind-pool.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard: %v", err)
	}
	var names []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			found := metricName.FindAllString(tg.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: query %q names no hvmind_ metric", p.Title, tg.Expr)
			}
			names = append(names, found...)
		}
	}
	return names
}

var metricName = regexp.MustCompile(`hvmind_[a-z_]+`)
