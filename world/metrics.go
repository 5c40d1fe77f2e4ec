package world

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// worldCollector is the world's state as Prometheus metrics, read by its
// writer (which owns the state) when scraped.
type worldCollector struct {
	s *Service
}

var (
	descMoney = prometheus.NewDesc("hvmind_world_player_money_dollars",
		"The player's money.", nil, nil)
	descLevel = prometheus.NewDesc("hvmind_world_player_hacking_level",
		"The player's hacking level.", nil, nil)
	descChanges = prometheus.NewDesc("hvmind_world_changes_total",
		"Changes the world applied (operations, RAM reservations) since it was made.", nil, nil)
	descServerMoney = prometheus.NewDesc("hvmind_world_server_money_dollars",
		"A server's money now, of servers that hold any at most.", []string{"server"}, nil)
	descServerMaxMoney = prometheus.NewDesc("hvmind_world_server_money_max_dollars",
		"A server's maximum money.", []string{"server"}, nil)
	descServerSecurity = prometheus.NewDesc("hvmind_world_server_security",
		"A server's security now (hack difficulty).", []string{"server"}, nil)
	descServerMinSecurity = prometheus.NewDesc("hvmind_world_server_min_security",
		"A server's minimum security.", []string{"server"}, nil)
	descRAM = prometheus.NewDesc("hvmind_world_ram_gigabytes",
		"A host's RAM, used or free.", []string{"host", "state"}, nil)
)

// Metrics returns the world's Prometheus metrics, read from its state when
// scraped: the player's money and level, the changes applied, each
// money-holding server's money and security with their bounds, and each
// host's RAM used and free. hvmind-pool serves them with its own (--http)
// when it runs the world; hvmind-world --http on its own.
func (s *Service) Metrics() prometheus.Collector { return worldCollector{s} }

// Describe sends the metrics' descriptions.
func (c worldCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMoney, descLevel, descChanges, descServerMoney, descServerMaxMoney,
		descServerSecurity, descServerMinSecurity, descRAM} {
		ch <- d
	}
}

// scrapeWait bounds how long a scrape waits for the writer: a world busy
// applying operations answers the scrape without its state rather than
// late.
const scrapeWait = 2 * time.Second

// Collect reads the state through the writer and sends it.
func (c worldCollector) Collect(ch chan<- prometheus.Metric) {
	got := make(chan []prometheus.Metric, 1)
	go c.s.enqueue(&item{
		run: func() (any, []write, error) { return c.snapshot(), nil, nil },
		respond: func(v any, err error) {
			ms, _ := v.([]prometheus.Metric)
			got <- ms
		},
	})
	select {
	case ms := <-got:
		for _, m := range ms {
			ch <- m
		}
	case <-time.After(scrapeWait):
	}
}

// snapshot is the state's metrics; the writer runs it.
func (c worldCollector) snapshot() []prometheus.Metric {
	st := c.s.st
	p := st.PlayerInfo()
	ms := []prometheus.Metric{
		prometheus.MustNewConstMetric(descMoney, prometheus.GaugeValue, p.Money),
		prometheus.MustNewConstMetric(descLevel, prometheus.GaugeValue, float64(p.HackingLevel)),
		prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(st.Seq)),
	}
	for _, name := range st.order {
		srv := st.servers[name]
		if srv.MoneyMax > 0 {
			ms = append(ms,
				prometheus.MustNewConstMetric(descServerMoney, prometheus.GaugeValue, srv.MoneyAvailable, name),
				prometheus.MustNewConstMetric(descServerMaxMoney, prometheus.GaugeValue, srv.MoneyMax, name),
				prometheus.MustNewConstMetric(descServerSecurity, prometheus.GaugeValue, srv.HackDifficulty, name),
				prometheus.MustNewConstMetric(descServerMinSecurity, prometheus.GaugeValue, srv.MinDifficulty, name))
		}
	}
	for _, h := range st.Hosts() {
		if h.MaxRAM <= 0 {
			continue
		}
		ms = append(ms,
			prometheus.MustNewConstMetric(descRAM, prometheus.GaugeValue, h.RAMUsed, h.Hostname, "used"),
			prometheus.MustNewConstMetric(descRAM, prometheus.GaugeValue, h.MaxRAM-h.RAMUsed, h.Hostname, "free"))
	}
	return ms
}
