"""Run a Python program under cProfile, profiling only between SIGUSR1 and SIGUSR2.

Usage: ``python benchmarks/_profiled.py OUT.prof PROGRAM [ARGS...]`` (PROGRAM: a Python script,
e.g. the ``sidecar`` console script). SIGUSR1 starts profiling, SIGUSR2 stops it, so a profile
covers only the measured part of a benchmark, not the program's start-up and shut-down. Times
are the main thread's CPU time (``time.thread_time``). The stats go to OUT.prof when PROGRAM
exits (SIGTERM on a program that shuts down cleanly). The program must not use SIGUSR1 or
SIGUSR2 itself; ``sidecar proxy`` does not.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time


def main() -> None:
    out, program = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    # The main thread's CPU time, not wall time: time the thread spends preempted on a busy
    # machine (or blocked) is not charged to whatever function it was in.
    profiler = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    try:
        runpy.run_path(program, run_name="__main__")
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
