package cli

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// ServeMetrics serves the collectors given and the Go runtime's, is ready
// when it returns, refuses an address in use, and Close ends it.
func TestServeMetrics(t *testing.T) {
	t.Parallel()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "hvmind_test_total", Help: "test"})
	c.Add(3)
	ms, err := ServeMetrics("127.0.0.1:0", zerolog.Nop(), c)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(ms.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"hvmind_test_total 3\n", "go_goroutines "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("%s lacks %q", ms.URL, want)
		}
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(ms.URL, "http://"), "/metrics")
	if _, err := ServeMetrics(addr, zerolog.Nop()); err == nil {
		t.Errorf("a second server on %s: no error", addr)
	}
	ms.Close()
	if _, err := http.Get(ms.URL); err == nil {
		t.Error("still served after Stop")
	}
}
