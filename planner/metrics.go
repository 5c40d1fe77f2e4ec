package planner

import (
	"github.com/prometheus/client_golang/prometheus"
)

// fleetCollector is a fleet's managers as Prometheus metrics, read from
// their Stats when scraped.
type fleetCollector struct {
	f     *Fleet
	descs map[string]*prometheus.Desc
}

// fleetMetric is one metric of every manager's Stats.
type fleetMetric struct {
	name, help string
	kind       prometheus.ValueType
	value      func(*Stats) float64
}

var fleetMetrics = []fleetMetric{
	{"hvmind_manager_stolen_dollars_total", "Money the target's done hacks stole.", prometheus.CounterValue, func(s *Stats) float64 { return s.Stolen }},
	{"hvmind_manager_batches_total", "Batches (or waves' batches) whose records all came.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Batches) }},
	{"hvmind_manager_batches_in_flight", "Batches dispatched whose records have not all come.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.InFlight) }},
	{"hvmind_manager_jobs_total", "Jobs the manager dispatched.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Jobs) }},
	{"hvmind_manager_desyncs_total", "Batches whose landings did not leave the target as planned.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Desyncs) }},
	{"hvmind_manager_missed_jobs_total", "The manager's jobs that ended missed.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Missed) }},
	{"hvmind_manager_failed_jobs_total", "The manager's jobs that ended failed.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Failed) }},
	{"hvmind_manager_skipped_slots_total", "Pipeline slots passed because dispatch fell behind.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Skipped) }},
	{"hvmind_manager_refused_slots_total", "Pipeline slots the pool had no threads for.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Refused) }},
	{"hvmind_manager_target_money_dollars", "The target's money now.", prometheus.GaugeValue, func(s *Stats) float64 { return s.Money }},
	{"hvmind_manager_target_money_max_dollars", "The target's maximum money.", prometheus.GaugeValue, func(s *Stats) float64 { return s.MoneyMax }},
	{"hvmind_manager_target_security", "The target's security now.", prometheus.GaugeValue, func(s *Stats) float64 { return s.Security }},
	{"hvmind_manager_target_min_security", "The target's minimum security.", prometheus.GaugeValue, func(s *Stats) float64 { return s.MinSec }},
	{"hvmind_manager_limit_dollars_per_game_second", "The most money per game second any batcher could take with the pipeline's threads.", prometheus.GaugeValue, func(s *Stats) float64 { return s.LimitPerGameSecond }},
}

// Metrics returns the fleet's Prometheus metrics, one series per target
// (label target), read from the managers when scraped:
// hvmind_manager_stolen_dollars_total, _batches_total,
// _batches_in_flight, _jobs_total, _desyncs_total, _missed_jobs_total,
// _failed_jobs_total, _skipped_slots_total, _refused_slots_total, the
// target's money and security (_target_money_dollars,
// _target_money_max_dollars, _target_security, _target_min_security),
// _limit_dollars_per_game_second, and hvmind_manager_phase{target,phase}
// (1 for the phase the manager is in). A manager --auto starts anew
// counts from zero, as a restarted process does.
func (f *Fleet) Metrics() prometheus.Collector {
	c := fleetCollector{f: f, descs: map[string]*prometheus.Desc{}}
	for _, m := range fleetMetrics {
		c.descs[m.name] = prometheus.NewDesc(m.name, m.help, []string{"target"}, nil)
	}
	c.descs["hvmind_manager_phase"] = prometheus.NewDesc("hvmind_manager_phase",
		"The phase the target's manager is in (prep, batch, …): 1 for it.", []string{"target", "phase"}, nil)
	return c
}

// Describe sends the metrics' descriptions.
func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect sends each manager's values.
func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, st := range c.f.Stats() {
		if st.Target == "" || seen[st.Target] {
			continue
		}
		seen[st.Target] = true
		for _, m := range fleetMetrics {
			ch <- prometheus.MustNewConstMetric(c.descs[m.name], m.kind, m.value(&st), st.Target)
		}
		if st.Phase != "" {
			ch <- prometheus.MustNewConstMetric(c.descs["hvmind_manager_phase"], prometheus.GaugeValue, 1, st.Target, st.Phase)
		}
	}
}
