package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// The load generator: closed loop (-concurrency callers, each making its next call when the
// last one ends) or open loop (-rate calls a second started on a fixed schedule whatever the
// answers do, so latency is the proxy's service time, not time spent queued behind other
// callers). A warm-up, then -duration of measured calls; one JSON summary on stdout.
//
// Open loop timing: Go's timers wake up to about 1 ms late on Linux, so the calls that fell due
// meanwhile start together and latency is measured from each call's actual start (measuring
// from the scheduled start would add the timer's lateness to every call). A proxy that stalls
// still shows: calls pile up in flight, and past -max-in-flight they are dropped and counted.

type loadConfig struct {
	target, method, mode string
	concurrency          int
	rate                 float64
	duration, warmup     time.Duration
	timeout              time.Duration
	payload              int
	maxInFlight          int
	watch                []int
}

// summary is what "load" prints. CPU figures are clock ticks (user+system) from /proc over
// the measured part, for the caller to convert with its own CLK_TCK.
type summary struct {
	Mode        string               `json:"mode"`
	Concurrency int                  `json:"concurrency"`
	Rate        float64              `json:"rate"`
	Calls       int64                `json:"calls"`
	Errors      int64                `json:"errors"`
	Dropped     int64                `json:"dropped"`
	Messages    int64                `json:"messages"`
	Seconds     float64              `json:"seconds"`
	CallsPerS   float64              `json:"calls_per_s"`
	P50Ms       float64              `json:"p50_ms"`
	P90Ms       float64              `json:"p90_ms"`
	P99Ms       float64              `json:"p99_ms"`
	MaxMs       float64              `json:"max_ms"`
	ClientTicks int64                `json:"client_cpu_ticks"`
	Watched     map[string]procUsage `json:"watched"`
	FirstError  string               `json:"first_error,omitempty"`
}

type procUsage struct {
	CPUTicks int64 `json:"cpu_ticks"`
	RSSKB    int64 `json:"rss_kb"` // at the end of the measured part
}

// tally is one caller's (or the open loop's) record of the calls it made.
type tally struct {
	hist                    histogram
	calls, errors, messages int64
	dropped                 int64 // open loop: not started, -max-in-flight calls in flight
	firstError              string
}

func (t *tally) add(started time.Time, messages int64, err error) {
	if err != nil {
		t.errors++
		if t.firstError == "" {
			t.firstError = err.Error()
		}
		return
	}
	t.hist.record(int64(time.Since(started)))
	t.calls++
	t.messages += messages
}

func runLoad(args []string) error {
	cfg, err := parseLoad(args)
	if err != nil {
		return err
	}
	conn, err := grpc.Dial(cfg.target, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return err
	}
	defer conn.Close()
	payload := []byte(strings.Repeat("x", cfg.payload))
	call := func() (int64, error) { return callOnce(conn, cfg, payload) }

	measure(cfg, call, time.Now().Add(cfg.warmup)) // warm-up: results dropped
	before := readUsage(cfg.watch)
	clientBefore := procTicks("self")
	started := time.Now()
	result := measure(cfg, call, started.Add(cfg.duration))
	elapsed := time.Since(started).Seconds()
	out := summarize(cfg, result, elapsed)
	out.ClientTicks = procTicks("self") - clientBefore
	for pid, after := range readUsage(cfg.watch) {
		after.CPUTicks -= before[pid].CPUTicks
		out.Watched[pid] = after
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func parseLoad(args []string) (loadConfig, error) {
	flags := flag.NewFlagSet("load", flag.ExitOnError)
	cfg := loadConfig{}
	flags.StringVar(&cfg.target, "target", "", "HOST:PORT to call")
	flags.StringVar(&cfg.method, "method", "/bench.Echo/Unary", "full method path")
	flags.StringVar(&cfg.mode, "mode", "unary", "unary | stream (one request, responses until the end)")
	flags.IntVar(&cfg.concurrency, "concurrency", 1, "closed loop: callers")
	flags.Float64Var(&cfg.rate, "rate", 0, "open loop: calls per second (overrides -concurrency)")
	seconds := flags.Float64("duration", 5, "measured seconds")
	warmup := flags.Float64("warmup", 1, "seconds of calls before measuring")
	timeout := flags.Float64("timeout", 10, "deadline of each call, seconds")
	flags.IntVar(&cfg.payload, "payload", 100, "request bytes")
	flags.IntVar(&cfg.maxInFlight, "max-in-flight", 1000, "open loop: calls outstanding at most")
	watch := flags.String("watch", "", "comma-separated pids whose CPU and RSS to report")
	if err := flags.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.target == "" || (cfg.mode != "unary" && cfg.mode != "stream") || cfg.concurrency < 1 ||
		cfg.rate < 0 || *seconds <= 0 || *warmup < 0 {
		return cfg, fmt.Errorf("need -target, -mode unary|stream, -concurrency >= 1, " +
			"-rate >= 0, -duration > 0, -warmup >= 0")
	}
	cfg.duration = time.Duration(*seconds * float64(time.Second))
	cfg.warmup = time.Duration(*warmup * float64(time.Second))
	cfg.timeout = time.Duration(*timeout * float64(time.Second))
	for _, field := range strings.Split(*watch, ",") {
		if field = strings.TrimSpace(field); field != "" {
			pid, err := strconv.Atoi(field)
			if err != nil {
				return cfg, fmt.Errorf("-watch: %q is not a pid", field)
			}
			cfg.watch = append(cfg.watch, pid)
		}
	}
	return cfg, nil
}

// callOnce makes one call; the number of response messages it got.
func callOnce(conn *grpc.ClientConn, cfg loadConfig, payload []byte) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	if cfg.mode == "unary" {
		var response []byte
		return 1, conn.Invoke(ctx, cfg.method, &payload, &response)
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, cfg.method)
	if err != nil {
		return 0, err
	}
	if err := stream.SendMsg(&payload); err != nil {
		return 0, err
	}
	if err := stream.CloseSend(); err != nil {
		return 0, err
	}
	var messages int64
	var response []byte
	for {
		if err := stream.RecvMsg(&response); err == io.EOF {
			return messages, nil
		} else if err != nil {
			return messages, err
		}
		messages++
	}
}

// measure runs calls until end, closed or open loop; every call it made, merged.
func measure(cfg loadConfig, call func() (int64, error), end time.Time) *tally {
	if cfg.rate > 0 {
		return openLoop(cfg, call, end)
	}
	tallies := make([]tally, cfg.concurrency)
	var wg sync.WaitGroup
	for i := range tallies {
		wg.Add(1)
		go func(t *tally) {
			defer wg.Done()
			for time.Now().Before(end) {
				started := time.Now()
				messages, err := call()
				t.add(started, messages, err)
			}
		}(&tallies[i])
	}
	wg.Wait()
	for i := 1; i < len(tallies); i++ {
		mergeTally(&tallies[0], &tallies[i])
	}
	return &tallies[0]
}

func openLoop(cfg loadConfig, call func() (int64, error), end time.Time) *tally {
	var (
		mu      sync.Mutex
		total   tally
		dropped int64
		wg      sync.WaitGroup
	)
	slots := make(chan struct{}, cfg.maxInFlight)
	interval := time.Duration(float64(time.Second) / cfg.rate)
	start := time.Now()
	for i := int64(0); ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if !due.Before(end) {
			break
		}
		time.Sleep(time.Until(due))
		select {
		case slots <- struct{}{}:
		default:
			dropped++
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			started := time.Now()
			messages, err := call()
			mu.Lock()
			total.add(started, messages, err)
			mu.Unlock()
			<-slots
		}()
	}
	wg.Wait()
	total.dropped = dropped
	return &total
}

func mergeTally(into, from *tally) {
	into.hist.merge(&from.hist)
	into.calls += from.calls
	into.errors += from.errors
	into.messages += from.messages
	into.dropped += from.dropped
	if into.firstError == "" {
		into.firstError = from.firstError
	}
}

func summarize(cfg loadConfig, t *tally, seconds float64) summary {
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return summary{
		Mode: cfg.mode, Concurrency: cfg.concurrency, Rate: cfg.rate,
		Calls: t.calls, Errors: t.errors, Dropped: t.dropped, Messages: t.messages, Seconds: seconds,
		CallsPerS: float64(t.calls) / seconds,
		P50Ms:     ms(t.hist.quantile(0.50)), P90Ms: ms(t.hist.quantile(0.90)),
		P99Ms: ms(t.hist.quantile(0.99)), MaxMs: ms(t.hist.max),
		Watched: map[string]procUsage{}, FirstError: t.firstError,
	}
}

// procTicks is a process's user+system CPU in clock ticks (/proc/PID/stat fields 14 and 15;
// the command name in field 2 may hold spaces, so fields are counted after its ")").
func procTicks(pid string) int64 {
	raw, err := ioutil.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	text := string(raw)
	fields := strings.Fields(text[strings.LastIndex(text, ")")+1:])
	if len(fields) < 13 {
		return 0
	}
	user, _ := strconv.ParseInt(fields[11], 10, 64)
	system, _ := strconv.ParseInt(fields[12], 10, 64)
	return user + system
}

// procRSSKB is a process's resident set (VmRSS of /proc/PID/status), kB.
func procRSSKB(pid string) int64 {
	raw, err := ioutil.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line)
			if len(fields) >= 2 {
				kb, _ := strconv.ParseInt(fields[1], 10, 64)
				return kb
			}
		}
	}
	return 0
}

func readUsage(pids []int) map[string]procUsage {
	usage := map[string]procUsage{}
	for _, pid := range pids {
		key := strconv.Itoa(pid)
		usage[key] = procUsage{CPUTicks: procTicks(key), RSSKB: procRSSKB(key)}
	}
	return usage
}
