package media

import (
	"sync/atomic"
	"time"
)

// Latency is a histogram of the edge's own delay in one direction of one
// call, in 1 ms bins up to latencyBins ms (longer ones in the last bin,
// and the maximum kept exactly). One goroutine adds; any may read. It
// costs 1 KiB a call and an atomic add a frame, which is what a per-call
// p50/p95/max needs.
type Latency struct {
	bins [latencyBins + 1]atomic.Uint32
	max  atomic.Int64
}

const latencyBins = 255

// Add counts one delay.
func (l *Latency) Add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	l.bins[min(int(d/time.Millisecond), latencyBins)].Add(1)
	if int64(d) > l.max.Load() {
		l.max.Store(int64(d))
	}
}

// LatencySummary is a per-call digest of a Latency.
type LatencySummary struct {
	Count    int64
	P50, P95 time.Duration // to the middle of their 1 ms bin
	Max      time.Duration
}

// Summary digests the delays counted so far.
func (l *Latency) Summary() LatencySummary {
	var counts [latencyBins + 1]uint32
	var n int64
	for i := range l.bins {
		counts[i] = l.bins[i].Load()
		n += int64(counts[i])
	}
	s := LatencySummary{Count: n, Max: time.Duration(l.max.Load())}
	if n == 0 {
		return s
	}
	quantile := func(q float64) time.Duration {
		rank := int64(q*float64(n-1)) + 1
		var seen int64
		for i, c := range counts {
			if seen += int64(c); seen >= rank {
				return min(time.Duration(i)*time.Millisecond+time.Millisecond/2, s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P95 = quantile(0.50), quantile(0.95)
	return s
}

// Each calls f with each bin's middle and count, for a histogram
// elsewhere (Prometheus) to take the call's delays in at its end.
func (l *Latency) Each(f func(d time.Duration, n uint32)) {
	for i := range l.bins {
		if c := l.bins[i].Load(); c > 0 {
			f(time.Duration(i)*time.Millisecond+time.Millisecond/2, c)
		}
	}
}
