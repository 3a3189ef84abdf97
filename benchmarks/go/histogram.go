package main

import "math/bits"

// histogram counts latencies (nanoseconds) in log-linear buckets: 128 per power of two, so a
// reported percentile is at most 1/128 (0.8%) above the true value, in fixed memory however
// many calls a run makes. Not safe for concurrent use: each caller goroutine keeps its own
// and the run merges them.
type histogram struct {
	counts [64 << subBits]int64
	total  int64
	max    int64
}

const subBits = 7

// bucketOf maps v >= 0 to its bucket: v itself below 256, then 128 buckets per doubling.
func bucketOf(v int64) int {
	shift := bits.Len64(uint64(v)) - (subBits + 1)
	if shift < 0 {
		return int(v)
	}
	return shift<<subBits + int(v>>uint(shift))
}

// bucketTop is the largest value that falls in bucket i.
func bucketTop(i int) int64 {
	if i < 2<<subBits {
		return int64(i)
	}
	shift := i>>subBits - 1
	low := int64(i-shift<<subBits) << uint(shift)
	return low + int64(1)<<uint(shift) - 1
}

func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	h.total++
	if v > h.max {
		h.max = v
	}
}

func (h *histogram) merge(other *histogram) {
	for i, c := range other.counts {
		h.counts[i] += c
	}
	h.total += other.total
	if other.max > h.max {
		h.max = other.max
	}
}

// quantile is the value at or below which a fraction q of the recorded values fall (the top
// of that value's bucket, never above the maximum); 0 when nothing was recorded.
func (h *histogram) quantile(q float64) int64 {
	rank := int64(q*float64(h.total) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if c > 0 && seen >= rank {
			if top := bucketTop(i); top < h.max {
				return top
			}
			return h.max
		}
	}
	return h.max
}
