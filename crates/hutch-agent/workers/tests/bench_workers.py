"""Startup, idle memory and execute round trip of each worker, started as the agent does.

    /usr/bin/python3 crates/hutch-agent/workers/tests/bench_workers.py [runs]

"auto" (the default) starts as the plain kernel; "python" never switches to IPython.
"CPU to ready" is the CPU time the worker used until it sent `ready` (from
/proc/PID/schedstat, so it is less sensitive to a busy machine than the wall time).
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_workers import HAVE_IPYTHON, NODE, Worker  # noqa: E402


def bench(language, kernel, runs, code):
    cpu, wall, rss, rtt = [], [], [], []
    for _ in range(runs):
        w = Worker(language, kernel=kernel)
        wall.append(w.ready_ms)
        with open("/proc/%d/schedstat" % w.proc.pid) as f:
            cpu.append(int(f.read().split()[0]) / 1e6)
        time.sleep(0.05)
        with open("/proc/%d/status" % w.proc.pid) as f:
            rss.append(int([x for x in f if x.startswith("VmRSS")][0].split()[1]) / 1024)
        for _ in range(20):
            t = time.perf_counter()
            w.run(code)
            rtt.append((time.perf_counter() - t) * 1000)
        w.close()
    print(
        "%-18s CPU to ready %6.1f ms   ready (wall) %6.1f ms   idle RSS %5.1f MiB   execute round trip %5.2f ms"
        % (
            language + "/" + (kernel or {"javascript": "node"}.get(language, language)),
            statistics.median(cpu),
            statistics.median(wall),
            statistics.median(rss),
            statistics.median(rtt),
        )
    )


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    bench("python", "python", runs, "x = 1 + 1")
    bench("python", "auto", runs, "x = 1 + 1")
    if HAVE_IPYTHON:
        bench("python", "ipython", max(1, runs // 4), "x = 1 + 1")
    if NODE:
        bench("javascript", None, runs, "x = 1 + 1")
    bench("bash", None, runs, "x=$((1 + 1))")
