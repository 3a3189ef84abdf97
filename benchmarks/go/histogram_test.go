package main

import "testing"

// Run with: cd benchmarks/go && GO111MODULE=off GOPATH=/usr/share/gocode go test .
// (not in CI, which has no Go: benchmarks/c_proxies.py's Python side is tested in
// tests/unit/benchmarks).

func TestBucketsAreContiguousAndTight(t *testing.T) {
	previous := -1
	for v := int64(0); v < 1<<20; v++ {
		b := bucketOf(v)
		if b != previous && b != previous+1 {
			t.Fatalf("value %d: bucket %d after %d", v, b, previous)
		}
		top := bucketTop(b)
		if bucketOf(top) != b || bucketOf(top+1) != b+1 || float64(top-v) > float64(v)/128 {
			t.Fatalf("value %d: bucket %d tops at %d", v, b, top)
		}
		previous = b
	}
}

func TestQuantiles(t *testing.T) {
	var h histogram
	for v := int64(1); v <= 1000; v++ {
		h.record(v * 1000) // 1 µs .. 1 ms
	}
	for _, c := range []struct {
		q    float64
		want int64
	}{{0.5, 500_000}, {0.99, 990_000}, {1, 1_000_000}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got-c.want) > float64(c.want)/128 {
			t.Errorf("q%.2f = %d, want %d (+0.8%%)", c.q, got, c.want)
		}
	}
	var other histogram
	other.record(5_000_000)
	h.merge(&other)
	if h.total != 1001 || h.max != 5_000_000 || h.quantile(1) != 5_000_000 {
		t.Errorf("merge: total %d max %d", h.total, h.max)
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("an empty histogram's quantile is 0")
	}
}
