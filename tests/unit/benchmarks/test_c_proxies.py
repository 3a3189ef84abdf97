"""benchmarks/c_proxies.py's pure parts: the configs it runs nginx, HAProxy and the sidecars
with, how it reads the Go load generator's summary, and how it judges the targets.

No timing here: every figure is made up; what is checked is the arithmetic and the text.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import _anchors
import _c_proxies_report as rep
import _loadgen
import c_proxies
import pytest
import yaml
from _harness import sidecar_config
from _loadgen import Load, Sample

from sidecar.config import parse_config


def sample(target: str = "t", load: str = rep.C16, *, calls: int = 1000, cpu: float = 100.0,
           p50: float = 1.0, rss_kb: int = 1024, errors: int = 0) -> Sample:
    return Sample(target=target, load=load, calls=calls, errors=errors, seconds=1.0,
                  p50_ms=p50, p90_ms=p50, p99_ms=p50 * 2, max_ms=p50 * 3,
                  cpu_us_per_call=cpu, rss_kb=rss_kb)


# --- the configs ----------------------------------------------------------------------------


def test_nginx_config_is_one_worker_with_a_keepalive_pool_and_writes_only_to_its_dir(
        tmp_path: Path) -> None:
    text = _anchors.nginx_config(41234, "127.0.0.1:5000", tmp_path)
    assert "worker_processes 1;" in text
    assert "daemon off;" in text
    upstream = re.search(r"upstream echo \{(.*?)\}", text, re.S)
    assert upstream is not None
    assert "server 127.0.0.1:5000;" in upstream.group(1)
    assert f"keepalive {_anchors.NGINX_KEEPALIVE};" in upstream.group(1)
    assert "listen 127.0.0.1:41234 http2;" in text
    assert "grpc_pass grpc://echo;" in text
    assert "access_log off;" in text
    paths = re.findall(r"\s(/[^\s;]+)", text)
    assert len(paths) == 7  # pid, error log and the five temp paths
    assert all(Path(p).is_relative_to(tmp_path) for p in paths), paths
    assert text.count("{") == text.count("}")


def test_haproxy_config_is_one_thread_and_h2_on_both_sides() -> None:
    text = _anchors.haproxy_config(41234, "127.0.0.1:5000")
    lines = [line.strip() for line in text.splitlines()]
    assert "nbthread 1" in lines
    assert "mode http" in lines
    assert "bind 127.0.0.1:41234 proto h2" in lines
    assert "server echo 127.0.0.1:5000 proto h2" in lines


@pytest.mark.parametrize("name", [rep.SIDECAR, rep.SIDECAR_3, rep.SIDECAR_100])
def test_each_sidecar_config_is_accepted_by_the_sidecar(name: str) -> None:
    echoes = ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]
    tracing = {"tracing": {"otlp_endpoint": "http://127.0.0.1:4317", "sample_ratio": 0.01}}
    config = sidecar_config(15001, "127.0.0.1:15000", 9464,
                            c_proxies.sidecar_upstreams(name, echoes), tracing)
    parsed = parse_config(yaml.safe_dump(config), env={})
    echo = parsed.upstreams["echo"]
    assert parsed.tracing is not None and parsed.tracing.sample_ratio == 0.01
    if name == rep.SIDECAR_3:
        assert len(parsed.upstreams) == 1
        assert echo.endpoints is not None and len(echo.endpoints) == 3
        assert echo.retry is not None and echo.retry.max_attempts == 3
    else:
        assert echo.address == echoes[0] and echo.retry is None
        expected = 1 + (c_proxies.EXTRA_UPSTREAMS if name == rep.SIDECAR_100 else 0)
        assert len(parsed.upstreams) == expected
        # the benchmark's method reaches the "echo" upstream only
        routes = [r for u in parsed.upstreams.values() for r in u.routes]
        assert [r for r in routes if c_proxies.UNARY.startswith(r)] == ["/bench.Echo/"]


# --- the load generator's summary ----------------------------------------------------------


def test_go_args_closed_loop_and_open_loop() -> None:
    closed = _loadgen.go_args(Path("/x/benchgo"), 5000, "/a/B", Load("c", 16), 3, 0.5, [7, 8])
    assert closed[:2] == ["/x/benchgo", "load"]
    assert closed[closed.index("-concurrency") + 1] == "16"
    assert closed[closed.index("-watch") + 1] == "7,8"
    assert closed[closed.index("-mode") + 1] == "unary"
    assert "-rate" not in closed
    opened = _loadgen.go_args(Path("b"), 5000, "/a/B", Load("r", rate=1000.0, stream=True),
                              3, 0.5, [7])
    assert opened[opened.index("-rate") + 1] == "1000"
    assert opened[opened.index("-mode") + 1] == "stream"
    assert "-concurrency" not in opened


def test_parse_summary_adds_up_the_watched_processes_per_call() -> None:
    text = json.dumps({
        "calls": 2000, "errors": 3, "dropped": 2, "messages": 2000, "seconds": 2.0,
        "p50_ms": 0.5, "p90_ms": 0.7, "p99_ms": 1.5, "max_ms": 9.0, "client_cpu_ticks": 10,
        "watched": {"7": {"cpu_ticks": 30, "rss_kb": 1000}, "8": {"cpu_ticks": 10, "rss_kb": 24},
                    "9": {"cpu_ticks": 500, "rss_kb": 500}},
    })
    got = _loadgen.parse_summary(text, "nginx", rep.C16, [7, 8], clk_tck=100)
    assert got.calls == 2000 and got.errors == 5  # a dropped call is an error
    assert got.cpu_us_per_call == pytest.approx(40 / 100 / 2000 * 1e6)  # 200 µs; pid 9 not ours
    assert got.rss_kb == 1024
    assert got.client_cpu_us_per_call == pytest.approx(50.0)
    assert got.throughput == pytest.approx(1000.0)
    assert (got.p50_ms, got.p90_ms, got.p99_ms, got.max_ms) == (0.5, 0.7, 1.5, 9.0)


def test_parse_summary_of_no_calls_has_no_cpu_per_call() -> None:
    text = json.dumps({"calls": 0, "errors": 9, "seconds": 1.0, "p50_ms": 0, "p90_ms": 0,
                       "p99_ms": 0, "max_ms": 0, "watched": {}})
    got = _loadgen.parse_summary(text, "x", rep.C1, [1], clk_tck=100)
    assert math.isnan(got.cpu_us_per_call) and got.errors == 9 and got.rss_kb == 0


# --- the targets and the tables ---------------------------------------------------------------


def _rounds(sidecar_cpu: list[float], naive_cpu: list[float]) -> rep.Rounds:
    return {(rep.SIDECAR, rep.C16): [sample(rep.SIDECAR, cpu=c) for c in sidecar_cpu],
            (rep.NAIVE, rep.C16): [sample(rep.NAIVE, cpu=c) for c in naive_cpu]}


def test_cpu_target_is_judged_on_per_round_pairs() -> None:
    # Medians of each side alone are 300 vs 300 (1.00x); the rounds' own pairs say 1.10x.
    rounds = _rounds([110, 330, 550], [100, 300, 500])
    (verdict,) = rep.verdicts(rounds)
    assert verdict.name == "cpu_vs_naive"
    assert verdict.value == pytest.approx(1.10)
    assert not verdict.met and "missed" not in verdict.text  # the caller says met/missed


def test_cpu_target_met_at_its_limit() -> None:
    (verdict,) = rep.verdicts(_rounds([103, 206], [100, 200]))
    assert verdict.met and verdict.value == pytest.approx(1.03)


def test_added_p50_and_three_endpoint_targets() -> None:
    rounds: rep.Rounds = {
        (rep.SIDECAR, rep.C1): [sample(rep.SIDECAR, rep.C1, p50=0.80)],
        (rep.NAIVE, rep.C1): [sample(rep.NAIVE, rep.C1, p50=0.70)],
        (rep.SIDECAR, rep.C16): [sample(rep.SIDECAR, cpu=500)],
        (rep.SIDECAR_3, rep.C16): [sample(rep.SIDECAR_3, cpu=520)],
    }
    found = {v.name: v for v in rep.verdicts(rounds)}
    assert set(found) == {"added_p50", "three_vs_one"}
    assert found["added_p50"].value == pytest.approx(0.10) and not found["added_p50"].met
    assert found["three_vs_one"].value == pytest.approx(1.04) and found["three_vs_one"].met


def test_no_cells_no_verdicts() -> None:
    assert rep.verdicts({}) == []


def test_each_table_column_is_its_own_median() -> None:
    rounds: rep.Rounds = {(rep.NGINX, rep.C16): [
        sample(rep.NGINX, calls=900, cpu=60, p50=3.0),
        sample(rep.NGINX, calls=1000, cpu=40, p50=1.0),
        sample(rep.NGINX, calls=1100, cpu=50, p50=2.0)]}
    (row,) = rep.table(rounds, [rep.NGINX], [rep.C16])[2:]
    assert row.split(" | ")[2:7] == ["1,000", "2.000", "-", "4.000", "50"]


def test_table_rows_show_added_latency_and_cpu_against_naive() -> None:
    rounds: rep.Rounds = {
        (rep.DIRECT, rep.C1): [sample(rep.DIRECT, rep.C1, p50=0.2, cpu=20)],
        (rep.NAIVE, rep.C1): [sample(rep.NAIVE, rep.C1, p50=0.9, cpu=400)],
        (rep.NGINX, rep.C1): [sample(rep.NGINX, rep.C1, p50=0.4, cpu=80, errors=2)],
    }
    lines = rep.table(rounds, [rep.DIRECT, rep.NAIVE, rep.NGINX, rep.SIDECAR], [rep.C1])
    assert len(lines) == 2 + 3  # header, rule, one row per target that ran
    nginx = lines[-1].split(" | ")
    assert nginx[:3] == ["| c=1", "nginx", "1,000"]
    assert nginx[4] == "+0.200" and nginx[6] == "80" and nginx[7] == "0.20x"
    assert nginx[8] == "2 |"
    direct = lines[2].split(" | ")
    assert direct[4] == "-" and direct[7] == "-"


def test_memory_table_shows_idle_loaded_and_every_round() -> None:
    rounds: rep.Rounds = {(rep.SIDECAR, rep.C64): [sample(rep.SIDECAR, rep.C64, rss_kb=70 * 1024),
                                                   sample(rep.SIDECAR, rep.C64, rss_kb=72 * 1024)]}
    lines = rep.memory_table(rounds, {rep.SIDECAR: 60 * 1024, rep.NGINX: 10 * 1024},
                             {rep.SIDECAR: [71 * 1024, 71 * 1024 + 512]},
                             [rep.NGINX, rep.SIDECAR])
    assert lines[2] == "| nginx | 10.0 | - |  |"
    assert lines[3] == "| sidecar | 60.0 | 72.0 | 71.0, 71.5 |"


def test_explain_is_drawn_from_the_run() -> None:
    def cell(target: str, load: str, cpu: float, p50: float = 1.0) -> list[Sample]:
        return [Sample(target, load, 1000, 0, 1.0, p50, p50, p50, p50, cpu, 1,
                       client_cpu_us_per_call=30.0)]
    rounds: rep.Rounds = {
        (rep.DIRECT, rep.RATE): cell(rep.DIRECT, rep.RATE, 100, p50=0.2),
        (rep.SIDECAR, rep.RATE): cell(rep.SIDECAR, rep.RATE, 600, p50=0.7),
        (rep.SIDECAR, rep.C1): cell(rep.SIDECAR, rep.C1, 600, p50=0.6),
        (rep.SIDECAR, rep.C16): cell(rep.SIDECAR, rep.C16, 500),
        (rep.NAIVE, rep.C16): cell(rep.NAIVE, rep.C16, 450),
        (rep.NGINX, rep.C16): cell(rep.NGINX, rep.C16, 50),
        (rep.SIDECAR, rep.C64): cell(rep.SIDECAR, rep.C64, 800),
        (rep.NGINX, rep.C64): cell(rep.NGINX, rep.C64, 40),
    }
    text = "\n".join(rep.explain(rounds, [rep.DIRECT, rep.NGINX, rep.SIDECAR], 0.75))
    assert "sidecar 0.60 core, +0.50 ms" in text and "direct 0." not in text
    assert "latency is service time, not queueing" in text  # 0.7 ms is not over 2 x 0.6 ms
    assert "nginx 25,000, sidecar 1,250." in text
    assert "10x nginx's CPU" in text and "costs 450 µs/call" in text and "+50 µs/call" in text
    assert "75% of the sidecar's CPU" in text
    assert "30 µs of CPU per call" in text and "(3% of a core)" in text
    assert "a core per 1,250 calls/s" in text


def test_explain_says_when_the_fixed_rate_queues() -> None:
    rounds: rep.Rounds = {
        (rep.SIDECAR, rep.RATE): [sample(rep.SIDECAR, rep.RATE, p50=5.0)],
        (rep.SIDECAR, rep.C1): [sample(rep.SIDECAR, rep.C1, p50=1.0)],
    }
    text = "\n".join(rep.explain(rounds, [rep.SIDECAR], None))
    assert "calls queue" in text and "not queueing" not in text


def test_an_outcome_saved_and_loaded_renders_the_same_section(tmp_path: Path) -> None:
    outcome = c_proxies.Outcome(
        "Go load generator", "x86_64, 2 cores", 3.0, 2, "0.50 / 0.40 / 0.30",
        [rep.DIRECT, rep.NAIVE, rep.SIDECAR], ["nginx"],
        samples=[sample(t, rep.C16, cpu=c) for _ in range(2)
                 for t, c in ((rep.DIRECT, 20.0), (rep.NAIVE, 400.0), (rep.SIDECAR, 420.0))],
        idle_kb={rep.SIDECAR: 65536}, after_round_kb={rep.SIDECAR: [70000, 70100]},
        main_thread_shares=[0.6, 0.7, 0.8], load_after="1.50 / 0.90 / 0.40")
    path = tmp_path / "run.json"
    outcome.save(path)
    loaded = c_proxies.Outcome.load(path)
    assert repr(loaded) == repr(outcome)  # NaN (no client CPU here) is not == itself
    body, found = c_proxies.render(loaded)
    assert body == c_proxies.render(outcome)[0]
    assert "before the run 0.50 / 0.40 / 0.30, after 1.50 / 0.90 / 0.40" in body
    assert "Not installed, so left out: nginx." in body
    assert "| c=16 | sidecar | 1,000 | 1.000 | +0.000 | 2.000 | 420 | 1.05x | 0 |" in body
    assert "| sidecar | 64.0 | - | 68.4, 68.5 |" in body
    assert [(v.name, v.met) for v in found] == [("cpu_vs_naive", False)]
    assert "1.05x**: missed" in body and "70% of the sidecar's CPU" in body


def test_noise_floor_is_the_a_a_controls_ratio() -> None:
    rounds: rep.Rounds = {(rep.SIDECAR, rep.C16): [sample(rep.SIDECAR, cpu=c) for c in (500, 600)],
                          (rep.SIDECAR_AA, rep.C16): [sample(rep.SIDECAR_AA, cpu=c)
                                                      for c in (510, 630)]}
    line = rep.noise_floor(rounds)
    assert line is not None and "**1.035x**" in line  # median of 1.02 and 1.05
    assert rep.noise_floor({}) is None
