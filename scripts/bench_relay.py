"""Relay cost per call of two `hutch` binaries, side by side in one run.

    python3 scripts/bench_relay.py OLD_HUTCH NEW_HUTCH [BLOCKS]

Starts `serve` of each binary (own temporary data directory, no warm pool), creates one
session on each, and sends blocks of 100 calls over one kept client connection to each server
in turn (a warm-up block, then BLOCKS, default 6): `GET /files/stat?path=/tmp` and
`POST /commands {"command": "true"}` alternately. Prints each server's p50/p90 per call kind and
its own CPU time per call (user + system of the server process, from /proc/PID/stat; the
agent and the command run in other processes). Needs root, like `hutch serve`.
"""

import atexit
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BLOCK = 100


def start(binary, data_dir):
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--on-exit", "destroy",
         "--data-dir", data_dir, "--warm-pool", "0"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "HUTCH_LOG": "warn"})
    atexit.register(proc.kill)
    url = token = None
    while url is None or token is None:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{binary} serve exited before it was ready")
        if "listening on " in line:
            url = line.split("listening on ")[1].strip()
        if line.strip().startswith("export TOKEN="):
            token = line.strip()[len("export TOKEN="):]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    conn.request("POST", "/v1/sessions", body="{}", headers=headers)
    session = json.loads(conn.getresponse().read())["sessionId"]
    return proc, conn, headers, session


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    binaries = {"old": sys.argv[1], "new": sys.argv[2]}
    blocks = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    scratch = tempfile.mkdtemp(prefix="hutch-bench-relay-")
    # Sandbox users must be able to pass through it to their sockets and layers.
    os.chmod(scratch, 0o711)
    try:
        servers = {name: start(b, os.path.join(scratch, name)) for name, b in binaries.items()}
        latencies = {name: {"stat": [], "true": []} for name in servers}
        cpu = dict.fromkeys(servers, 0.0)
        for block in range(blocks + 1):
            for name, (proc, conn, headers, session) in servers.items():
                before = cpu_seconds(proc.pid)
                for i in range(BLOCK):
                    started = time.perf_counter()
                    if i % 2:
                        kind = "stat"
                        conn.request("GET", f"/v1/sessions/{session}/files/stat?path=/tmp",
                                     headers=headers)
                    else:
                        kind = "true"
                        conn.request("POST", f"/v1/sessions/{session}/commands",
                                     body='{"command": "true"}', headers=headers)
                    answer = conn.getresponse()
                    answer.read()
                    if answer.status != 200:
                        raise SystemExit(f"{name}: {kind} answered {answer.status}")
                    if block:
                        latencies[name][kind].append(time.perf_counter() - started)
                if block:
                    cpu[name] += cpu_seconds(proc.pid) - before
        print(f"load average at the end: {os.getloadavg()}")
        for name, (proc, conn, headers, session) in servers.items():
            for kind, label in [("stat", "GET files/stat"), ("true", "POST commands true")]:
                xs = sorted(latencies[name][kind])
                print(f"{name}  {label:20} p50 {statistics.median(xs) * 1e3:6.2f} ms"
                      f"  p90 {xs[int(len(xs) * 0.9)] * 1e3:6.2f} ms")
            calls = blocks * BLOCK
            print(f"{name}  server CPU per call {cpu[name] / calls * 1e3:.3f} ms ({calls} calls)")
            conn.request("DELETE", f"/v1/sessions/{session}", headers=headers)
            conn.getresponse().read()
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
