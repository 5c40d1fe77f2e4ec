package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// MetricsServer serves a program's Prometheus metrics over HTTP, and
// whatever else the program serves beside them.
type MetricsServer struct {
	srv  *http.Server
	done chan struct{}
	// URL is where the metrics are, http://host:port/metrics.
	URL string
	// Base is the server's root, http://host:port/.
	Base string
}

// ServeMetrics listens on addr (host:port; port 0 picks one) and serves
// at /metrics the given collectors, with the Go runtime's and the
// process's. It returns once it listens, so that the address it prints is
// ready.
func ServeMetrics(addr string, log zerolog.Logger, cs ...prometheus.Collector) (*MetricsServer, error) {
	return ServeHTTP(addr, log, nil, cs...)
}

// ServeHTTP is ServeMetrics with more to serve: routes maps a pattern of
// http.ServeMux ("/" for the rest) to its handler.
func ServeHTTP(addr string, log zerolog.Logger, routes map[string]http.Handler, cs ...prometheus.Collector) (*MetricsServer, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	for pattern, h := range routes {
		mux.Handle(pattern, h)
	}
	base := "http://" + ln.Addr().String() + "/"
	m := &MetricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		done: make(chan struct{}),
		URL:  base + "metrics",
		Base: base,
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn().Err(err).Msg("metrics server")
		}
	}()
	log.Info().Str("url", m.URL).Msg("serving metrics")
	return m, nil
}

// metricsStopWait is how long Close lets a scrape under way finish.
const metricsStopWait = 2 * time.Second

// Close stops serving, letting a scrape under way finish for up to
// metricsStopWait, and returns once the server's goroutine has ended.
func (m *MetricsServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), metricsStopWait)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
	<-m.done
}
