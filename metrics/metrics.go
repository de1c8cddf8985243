// Package metrics declares every Prometheus metric trunkgate exports, in
// one place, and serves them. Key ids (never keys) label per-key series.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"trunkgate/refusal"
)

// KeyUsages reports each key's channels and spend at scrape time.
type KeyUsages interface {
	KeyUsage() []KeyUsage
}

// KeyUsage is one key's channel use and spend.
type KeyUsage struct {
	KeyID           string
	Active          int
	Limit           int
	SpendMicros     int64  // this month, live calls included
	RemainingMicros *int64 // under the spend cap; nil: no cap
}

// Metrics holds the edge's metrics.
type Metrics struct {
	reg        *prometheus.Registry
	admissions *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	ended      *prometheus.CounterVec
	setup      prometheus.Histogram
	duration   prometheus.Histogram
	framesOut  prometheus.Counter
	framesDrop prometheus.Counter
	lost       prometheus.Counter
	draining   prometheus.Gauge
	floodBans  prometheus.Counter
	screened   prometheus.Counter
	admission  prometheus.Histogram
	protection *prometheus.CounterVec
	sipReqs    *prometheus.CounterVec
	sipResps   *prometheus.CounterVec
	rtp        *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

// New registers the metrics, the Go runtime collectors and a collector
// that reads channel use and spend from usage when scraped.
func New(usage KeyUsages) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trunkgate_admissions_total", Help: "Calls admitted, by key id and direction.",
		}, []string{"key_id", "direction"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trunkgate_refusals_total", Help: "Calls refused, by key id (empty when no trunk matched) and reason.",
		}, []string{"key_id", "reason"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trunkgate_calls_ended_total", Help: "Answered calls ended, by key id and the side that hung up.",
		}, []string{"key_id", "side"}),
		setup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "trunkgate_call_setup_seconds", Help: "INVITE received to 200 OK sent.",
			Buckets: []float64{.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "trunkgate_call_duration_seconds", Help: "Answered call durations.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trunkgate_app_frames_sent_total", Help: "20 ms audio frames sent to AI applications.",
		}),
		framesDrop: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trunkgate_app_frames_dropped_total", Help: "Audio frames dropped because an AI application read too slowly.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trunkgate_rtp_packets_lost_total", Help: "RTP packets lost from carriers (RFC 3550 expected minus received).",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trunkgate_draining", Help: "1 while the edge drains for shutdown.",
		}),
		floodBans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trunkgate_flood_bans_total", Help: "Sources banned for sending too many SIP requests.",
		}),
		screened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trunkgate_flood_requests_dropped_total", Help: "SIP requests from banned sources, dropped or refused unhandled.",
		}),
		admission: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trunkgate_admission_seconds",
			Help:    "Admission of a call against its key: caps, spend and the ledger (one database round trip with several edges).",
			Buckets: []float64{.00001, .00005, .0001, .0002, .0005, .001, .002, .005, .01, .05, .2},
		}),
		protection: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trunkgate_calls_answered_total",
			Help: "Answered calls by the carrier leg's SIP transport (udp, tcp, tls) and media encryption (srtp, none).",
		}, []string{"transport", "media"}),
		sipReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trunkgate_sip_requests_total", Help: "SIP requests handled (after the flood guard), by method.",
		}, []string{"method"}),
		sipResps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trunkgate_sip_responses_total", Help: "SIP responses sent, by class (1xx to 6xx).",
		}, []string{"class"}),
		rtp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trunkgate_rtp_packets_total", Help: "RTP packets of ended calls, in (from carriers) and out (to carriers).",
		}, []string{"direction"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "trunkgate_edge_latency_seconds",
			Help: "The edge's own delay, per frame of ended calls: to_app is RTP in to its frame written to the app " +
				"(jitter buffer included), to_carrier is app audio (into an empty queue) to its first RTP packet out.",
			Buckets: []float64{.002, .005, .01, .015, .02, .025, .03, .04, .05, .06, .08, .1, .15, .25},
		}, []string{"direction"}),
	}
	reg.MustRegister(m.admissions, m.refusals, m.ended, m.setup, m.duration, m.framesOut, m.framesDrop, m.lost, m.draining,
		m.floodBans, m.screened, m.admission, m.protection, m.sipReqs, m.sipResps, m.rtp, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if usage != nil {
		reg.MustRegister(&keyCollector{usage: usage})
	}
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Admitted counts an admission.
func (m *Metrics) Admitted(keyID, direction string) {
	m.admissions.WithLabelValues(keyID, direction).Inc()
}

// Refused counts a refusal.
func (m *Metrics) Refused(keyID string, r refusal.Reason) {
	m.refusals.WithLabelValues(keyID, r.Label()).Inc()
}

// Answered records a call's setup time, and what protected its carrier
// leg: the SIP transport ("UDP", "TCP", "TLS") and the media encryption
// ("srtp" or "none").
func (m *Metrics) Answered(setup time.Duration, transport, media string) {
	m.setup.Observe(setup.Seconds())
	m.protection.WithLabelValues(strings.ToLower(transport), media).Inc()
}

// SIPRequest counts a SIP request by method (sip.Observer). Methods
// outside RFC 3261's and its extensions' are counted as "other", so that
// a scanner cannot grow the label set.
func (m *Metrics) SIPRequest(method string) {
	switch method {
	case "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY",
		"REFER", "MESSAGE", "PUBLISH":
	default:
		method = "other"
	}
	m.sipReqs.WithLabelValues(method).Inc()
}

// SIPResponse counts a SIP response by class (sip.Observer).
func (m *Metrics) SIPResponse(code int) {
	if code < 100 || code > 699 {
		return
	}
	m.sipResps.WithLabelValues(strconv.Itoa(code/100) + "xx").Inc()
}

// RTP counts an ended call's packets.
func (m *Metrics) RTP(in, out uint64) {
	m.rtp.WithLabelValues("in").Add(float64(in))
	m.rtp.WithLabelValues("out").Add(float64(out))
}

// Ended records an answered call's end.
func (m *Metrics) Ended(keyID, side string, d time.Duration, framesOut, framesDropped, lost int64) {
	m.ended.WithLabelValues(keyID, side).Inc()
	m.duration.Observe(d.Seconds())
	m.framesOut.Add(float64(framesOut))
	m.framesDrop.Add(float64(framesDropped))
	if lost > 0 {
		m.lost.Add(float64(lost))
	}
}

// Delays is a call's histogram of delays (media.Latency): each bin's
// middle and count.
type Delays interface {
	Each(f func(d time.Duration, n uint32))
}

// EdgeLatency takes an ended call's delays into the latency histograms.
func (m *Metrics) EdgeLatency(toApp, toCarrier Delays) {
	for dir, l := range map[string]Delays{"to_app": toApp, "to_carrier": toCarrier} {
		if l == nil {
			continue
		}
		h := m.latency.WithLabelValues(dir)
		l.Each(func(d time.Duration, n uint32) {
			for range n {
				h.Observe(d.Seconds())
			}
		})
	}
}

// AdmissionTook records how long one admission took, admitted or refused.
func (m *Metrics) AdmissionTook(d time.Duration) { m.admission.Observe(d.Seconds()) }

// ClusterStats is what an edge sharing a database knows of the others.
type ClusterStats struct {
	Nodes        int    // edges heartbeating at the last sync, this one included
	SyncFailures uint64 // syncs that failed
	DeadNodes    uint64 // silent edges whose calls this edge closed
}

// WatchCluster exports stats, read at scrape time (edges on PostgreSQL).
func (m *Metrics) WatchCluster(stats func() ClusterStats) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "trunkgate_cluster_nodes",
			Help: "Edges sharing the database that heartbeat at the last sync."},
			func() float64 { return float64(stats().Nodes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "trunkgate_cluster_sync_failures_total",
			Help: "Syncs with the shared ledger that failed (calls are refused while the database does not answer)."},
			func() float64 { return float64(stats().SyncFailures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "trunkgate_cluster_dead_nodes_total",
			Help: "Silent edges whose channels this edge freed and whose calls it billed."},
			func() float64 { return float64(stats().DeadNodes) }))
}

// FloodBanned counts a source banned by the flood guard.
func (m *Metrics) FloodBanned() { m.floodBans.Inc() }

// Screened counts a request from a banned source.
func (m *Metrics) Screened() { m.screened.Inc() }

// SetDraining flags the drain.
func (m *Metrics) SetDraining(on bool) {
	if on {
		m.draining.Set(1)
	} else {
		m.draining.Set(0)
	}
}

var (
	channelsDesc  = prometheus.NewDesc("trunkgate_channels_in_use", "Live calls holding a channel, by key id.", []string{"key_id"}, nil)
	limitDesc     = prometheus.NewDesc("trunkgate_channels_limit", "max_channels of each key (0 = no limit).", []string{"key_id"}, nil)
	spendDesc     = prometheus.NewDesc("trunkgate_key_spend_micros", "Spend this calendar month (UTC), live calls included, in currency micros, by key id.", []string{"key_id"}, nil)
	remainingDesc = prometheus.NewDesc("trunkgate_key_spend_remaining_micros", "What is left under the monthly spend cap, in currency micros, by key id (keys with a cap).", []string{"key_id"}, nil)
)

type keyCollector struct{ usage KeyUsages }

func (c *keyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- channelsDesc
	ch <- limitDesc
	ch <- spendDesc
	ch <- remainingDesc
}

func (c *keyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.usage.KeyUsage() {
		ch <- prometheus.MustNewConstMetric(channelsDesc, prometheus.GaugeValue, float64(u.Active), u.KeyID)
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(u.Limit), u.KeyID)
		ch <- prometheus.MustNewConstMetric(spendDesc, prometheus.GaugeValue, float64(u.SpendMicros), u.KeyID)
		if u.RemainingMicros != nil {
			ch <- prometheus.MustNewConstMetric(remainingDesc, prometheus.GaugeValue, float64(*u.RemainingMicros), u.KeyID)
		}
	}
}
