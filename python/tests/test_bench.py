"""``bench/clients.py`` runs against a real server and prints the lines ``hutch bench clients``
reads (quick mode: the figures mean little here, their shape is what is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import HutchServer, new_tenant

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "clients.py"


def test_the_client_bench_prints_one_json_object_per_case(hutch_server: HutchServer) -> None:
    token = hutch_server.token(new_tenant())
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", hutch_server.api_url, "--token", token, "--quick"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    latency = [(line["client"], line["case"]) for line in lines if "p50_ms" in line]
    assert latency == [
        ("python-sync", "execute x = 1 + 1"),
        ("python-sync", "commands true"),
        ("python-async", "execute x = 1 + 1"),
        ("python-async", "commands true"),
    ]
    for line in lines[:4]:
        assert 0 < line["p50_ms"] <= line["p99_ms"] and line["n"] == 20
    throughput = lines[4]
    assert (throughput["client"], throughput["case"]) == ("python-async", "100 concurrent executions")
    assert throughput["per_second"] > 0 and throughput["sync_per_second"] > 0


def test_the_client_bench_runs_one_client_alone(hutch_server: HutchServer) -> None:
    token = hutch_server.token(new_tenant())
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", hutch_server.api_url, "--token", token]
        + ["--client", "async", "--iterations", "5", "--warmup", "1"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["client"], line["case"], line["n"]) for line in lines] == [
        ("python-async", "execute x = 1 + 1", 5),
        ("python-async", "commands true", 5),
    ]
    assert all(line["cpu_ms"] > 0 for line in lines)
