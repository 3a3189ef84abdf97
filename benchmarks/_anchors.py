"""The C anchors of ``benchmarks/c_proxies.py``: Debian's nginx and HAProxy as gRPC proxies.

Both are configured the way one would to forward gRPC cheaply, and as alike as the two allow:
one worker process (nginx) or one thread (HAProxy), HTTP/2 on both sides, upstream
connections kept open and reused (nginx: an upstream ``keepalive`` pool; HAProxy: its HTTP/2
server connections multiplex every stream), no access log. Each runs in the foreground from a
config written to the run's temporary directory, on a free port of 127.0.0.1, with every path
it writes (pid file, error log, temp files) inside that directory, so nothing needs root.

The config text is built by pure functions (:func:`nginx_config`, :func:`haproxy_config`),
tested in ``tests/unit/benchmarks``; :func:`start_nginx` and :func:`start_haproxy` run them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from _harness import Processes, children, free_port

NGINX_KEEPALIVE = 64
"""Idle upstream connections nginx keeps per worker (one per concurrent call at c=64)."""
KEEPALIVE_REQUESTS = 1_000_000
"""Calls per connection before nginx closes it (its default, 1000, would reconnect every
1000 calls on both sides: cost no production config pays at this rate)."""


def nginx_config(listen: int, upstream: str, workdir: Path) -> str:
    """nginx.conf for a gRPC pass-through from 127.0.0.1:``listen`` to ``upstream``."""
    temp = workdir / "nginx-temp"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
worker_processes 1;
daemon off;
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp_paths}
    keepalive_requests {KEEPALIVE_REQUESTS};
    upstream echo {{
        server {upstream};
        keepalive {NGINX_KEEPALIVE};
        keepalive_requests {KEEPALIVE_REQUESTS};
    }}
    server {{
        listen 127.0.0.1:{listen} http2;
        http2_max_concurrent_streams 1024;
        location / {{
            grpc_pass grpc://echo;
        }}
    }}
}}
"""


def haproxy_config(listen: int, upstream: str) -> str:
    """haproxy.cfg for a gRPC pass-through from 127.0.0.1:``listen`` to ``upstream``."""
    return f"""\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend grpc_in
    bind 127.0.0.1:{listen} proto h2
    default_backend echo

backend echo
    server echo {upstream} proto h2
"""


def missing_anchors() -> list[str]:
    """The anchors whose binary is not installed (their rows are left out, and said so)."""
    return [name for name in ("nginx", "haproxy") if shutil.which(name) is None]


def start_nginx(procs: Processes, name: str, workdir: Path, upstream: str) -> list[int]:
    """Start nginx (``procs.ports[name]``); the pids to measure: master and its worker."""
    listen = free_port()
    (workdir / "nginx-temp").mkdir(exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(listen, upstream, workdir))
    nginx = shutil.which("nginx") or "nginx"
    procs.start(name, [nginx, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"),
                       "-c", str(config)], port=listen)
    procs.ports[name] = listen
    master = procs.pids[name]
    return [master, *children(master)]


def start_haproxy(procs: Processes, name: str, workdir: Path, upstream: str) -> list[int]:
    """Start HAProxy in the foreground (``-db``) (``procs.ports[name]``); its pid."""
    listen = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config(listen, upstream))
    haproxy = shutil.which("haproxy") or "haproxy"
    procs.start(name, [haproxy, "-db", "-f", str(config)], port=listen)
    procs.ports[name] = listen
    return [procs.pids[name]]
