package agent

import (
	"github.com/cifha/cifha/pkg/ha"
	"net/http"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the agent's Prometheus metrics. State gauges are computed at
// scrape time from the loop's last snapshot (no goroutine of their own, and
// a scrape never touches postgres or etcd); counters and the loop histogram
// are updated by the loop.
type Metrics struct {
	reg       *prometheus.Registry
	loop      prometheus.Histogram
	actions   *prometheus.CounterVec
	switchovs *prometheus.CounterVec
}

func newMetrics(a *Agent) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	labels := prometheus.Labels{"cluster": a.opt.Cluster, "member": a.opt.Name}
	m.loop = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cifha_loop_duration_seconds", Help: "Duration of one observe-decide-act iteration of the HA loop.",
		ConstLabels: labels, Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	m.actions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cifha_actions_total", Help: "HA actions taken (promote, fence, demote, rewind, ...), by action.",
		ConstLabels: labels,
	}, []string{"action"})
	m.switchovs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cifha_switchovers_total", Help: "Planned switchovers this member carried out as the old leader, by result.",
		ConstLabels: labels,
	}, []string{"result"})
	m.reg.MustRegister(m.loop, m.actions, m.switchovs, newStateCollector(a, labels),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// stateCollector turns the last snapshot into gauges.
type stateCollector struct {
	a                    *Agent
	descs                map[string]*prometheus.Desc // the stateDescs gauges
	lag, lagSeconds, lsn *prometheus.Desc
}

func newStateCollector(a *Agent, labels prometheus.Labels) *stateCollector {
	c := &stateCollector{a: a, descs: map[string]*prometheus.Desc{},
		lag:        prometheus.NewDesc("cifha_replication_lag_bytes", "On the leader: its current WAL LSN minus each standby's replay LSN.", []string{"standby"}, labels),
		lagSeconds: prometheus.NewDesc("cifha_replication_lag_seconds", "On the leader: how far each standby's replay is behind in time (0 when it has replayed all WAL; else pg_stat_replication.replay_lag; absent when unknown).", []string{"standby"}, labels),
		lsn:        prometheus.NewDesc("cifha_wal_lsn_bytes", "This member's WAL positions as byte offsets.", []string{"kind"}, labels)}
	for _, d := range stateDescs {
		c.descs[d.name] = prometheus.NewDesc(d.name, d.help, nil, labels)
	}
	return c
}

var stateDescs = []struct{ name, help string }{
	{"cifha_up", "1 while the agent runs (always 1 when scraped)."},
	{"cifha_is_leader", "1 when this member holds the leader key on its current lease."},
	{"cifha_postgres_running", "1 when the postmaster cifha started is running."},
	{"cifha_postgres_primary", "1 when postgres runs as a primary (accepts writes if the lease allows)."},
	{"cifha_postgres_streaming", "1 when postgres is a standby streaming from a primary."},
	{"cifha_timeline", "Current timeline of postgres (0 when unknown)."},
	{"cifha_lease_valid_seconds", "Seconds the agent's etcd lease is known to be valid (0 when none)."},
	{"cifha_etcd_reachable", "1 when the last read of the cluster from etcd succeeded."},
	{"cifha_cluster_has_leader", "1 when the cluster has a valid leader key (as this member last saw it)."},
	{"cifha_cluster_paused", "1 when the cluster is in maintenance mode (no automatic failover)."},
	{"cifha_cluster_members", "Members publishing their state in etcd."},
	{"cifha_pending_restart_parameters", "Parameters changed that need a restart of postgres on this member."},
	{"cifha_observation_age_seconds", "Seconds since the HA loop last observed the cluster (a hung loop grows it)."},
	{"cifha_synchronous_mode", "1 when synchronous mode is in effect on this member (2: strict), 0 when off."},
	{"cifha_synchronous_standbys", "On the leader in synchronous mode: standbys recorded as synchronous (every acknowledged commit is on each; 0 means no automatic failover)."},
	{"cifha_is_synchronous_standby", "1 when this member is recorded as a synchronous standby of the current leader."},
	{"cifha_fence_watchdog_ok", "1 while the separate fence watchdog process takes deadlines (0: a primary is fenced and none is started)."},
	{"cifha_archive_archived_total", "WAL files archived by this postgres (pg_stat_archiver.archived_count; only while archive_mode is on)."},
	{"cifha_archive_failed_total", "Failed attempts to archive a WAL file (pg_stat_archiver.failed_count; postgres retries)."},
	{"cifha_archive_last_archived_timestamp_seconds", "When the last WAL file was archived (Unix time)."},
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range stateDescs {
		ch <- c.descs[d.name]
	}
	ch <- c.lag
	ch <- c.lagSeconds
	ch <- c.lsn
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Snapshot()
	now := c.a.now()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	vals := map[string]float64{"cifha_up": 1}
	if wd := c.a.opt.Watchdog; wd != nil {
		vals["cifha_fence_watchdog_ok"] = b(wd.Err() == "")
	}
	if s != nil {
		leader := s.Cluster.Leader
		vals["cifha_is_leader"] = b(s.IsLeader && ha.MayStayWritable(now, s.Lease, c.a.opt.FenceMargin))
		// Running is also checked live: the snapshot is as old as the loop's
		// current action (a switchover stops postgres within one).
		live := c.a.opt.PG.Running()
		vals["cifha_postgres_running"] = b(s.Running && live)
		vals["cifha_postgres_primary"] = b(s.Running && live && s.Member.Role == "primary" && s.Member.State == "running")
		vals["cifha_postgres_streaming"] = b(s.Streaming)
		vals["cifha_timeline"] = float64(s.Member.Timeline)
		if s.Lease.Held(now) {
			vals["cifha_lease_valid_seconds"] = s.Lease.ValidUntil.Sub(now).Seconds()
		} else {
			vals["cifha_lease_valid_seconds"] = 0
		}
		vals["cifha_etcd_reachable"] = b(s.DCSErr == "")
		vals["cifha_cluster_has_leader"] = b(leader != nil && leader.Valid)
		vals["cifha_cluster_paused"] = b(s.Cluster.Paused)
		vals["cifha_cluster_members"] = float64(len(s.Cluster.Members))
		vals["cifha_pending_restart_parameters"] = float64(len(s.Member.PendingRestart))
		vals["cifha_observation_age_seconds"] = now.Sub(s.ObservedAt).Seconds()
		if ar := s.Archiver; ar != nil && ar.On {
			vals["cifha_archive_archived_total"] = float64(ar.Archived)
			vals["cifha_archive_failed_total"] = float64(ar.Failed)
			if !ar.LastArchivedAt.IsZero() {
				vals["cifha_archive_last_archived_timestamp_seconds"] = float64(ar.LastArchivedAt.UnixNano()) / 1e9
			}
		}
		vals["cifha_synchronous_mode"] = 0
		if s.Sync.On {
			vals["cifha_synchronous_mode"] = 1
			if s.Sync.Strict {
				vals["cifha_synchronous_mode"] = 2
			}
		}
		sy := s.Cluster.Sync
		if s.IsLeader && s.Sync.On {
			n := 0
			if sy != nil && sy.Leader == s.Member.Name {
				n = len(sy.Members)
			}
			vals["cifha_synchronous_standbys"] = float64(n)
		}
		vals["cifha_is_synchronous_standby"] = b(sy != nil && leader != nil && leader.Valid && sy.Leader == leader.Name && sy.Has(s.Member.Name))
	}
	for _, d := range stateDescs {
		v, ok := vals[d.name]
		if !ok {
			continue // nothing observed yet: absent, not 0 (unknown is not healthy)
		}
		vt := prometheus.GaugeValue
		if strings.HasSuffix(d.name, "_total") {
			vt = prometheus.CounterValue // postgres' own counters, passed through
		}
		ch <- prometheus.MustNewConstMetric(c.descs[d.name], vt, v)
	}
	if s == nil {
		return
	}
	if s.IsLeader {
		for _, r := range s.Member.Replicas {
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(max(r.LagBytes, 0)), r.Name)
			if r.LagSeconds != nil {
				ch <- prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, *r.LagSeconds, r.Name)
			}
		}
	}
	for kind, v := range map[string]string{"current": s.Member.CurrentLSN, "receive": s.Member.ReceiveLSN, "replay": s.Member.ReplayLSN} {
		if v == "" {
			continue
		}
		if l, err := pgctl.ParseLSN(v); err == nil {
			ch <- prometheus.MustNewConstMetric(c.lsn, prometheus.GaugeValue, float64(l), kind)
		}
	}
}

// observeLoop records one iteration's duration and action.
func (m *Metrics) observeLoop(d time.Duration, p ha.Plan) {
	if m == nil {
		return
	}
	m.loop.Observe(d.Seconds())
	if p.Action != ha.None && p.Action != ha.Wait {
		m.actions.WithLabelValues(p.Action.String()).Inc()
	}
}
