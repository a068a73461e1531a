"""Per-call overhead of the Python SDK, blocking and async, against a running hutch server.

    python bench/clients.py --url URL --token TOKEN [--quick] [--client sync|async|concurrent]

Prints one JSON object per line (``--client`` runs only one of the three parts; without it,
all three)::

    {"client": "python-sync", "case": "execute x = 1 + 1", "p50_ms": …, "p99_ms": …, "n": …,
     "cpu_ms": …}
    {"client": "python-sync", "case": "commands true", …}
    {"client": "python-async", "case": "execute x = 1 + 1", …}
    {"client": "python-async", "case": "commands true", …}
    {"client": "python-async", "case": "100 concurrent executions", "per_second": …,
     "sync_per_second": …, "cpu_ms": …}

``cpu_ms`` is the CPU time (user + system, ``time.process_time()``) this process, the client,
spent per call. The last line runs
``x = 1 + 1`` on 100 interpreter contexts at once from one event loop (``asyncio.gather``),
and the same executions one after another with the blocking client.
A session holds at most 32 contexts, so the 100 are spread over 4 sessions. ``--quick`` runs
few iterations: it checks that everything works; its figures mean little. ``--url`` defaults
to ``HUTCH_URL`` and ``--token`` to ``HUTCH_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Sequence

from hutch import AsyncSessionsClient, SessionsClient

CODE = "x = 1 + 1"
CONTEXTS = 100
CONTEXTS_PER_SESSION = 25


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Samples(List[float]):
    """Seconds per call, and the CPU seconds this process spent on all of them."""

    cpu = 0.0


def figures(client: str, case: str, samples: Samples) -> Dict[str, Any]:
    """One line of output for a latency case."""
    return {
        "client": client,
        "case": case,
        "p50_ms": round(percentile(samples, 0.5) * 1000, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 3),
        "n": len(samples),
        "cpu_ms": round(samples.cpu / len(samples) * 1000, 3),
    }


def measure(call: Callable[[], Any], warmup: int, iterations: int) -> Samples:
    """Seconds per call of ``call``, after ``warmup`` unmeasured calls."""
    for _ in range(warmup):
        call()
    samples = Samples()
    cpu = time.process_time()
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    samples.cpu = time.process_time() - cpu
    return samples


async def measure_async(call: Callable[[], Awaitable[Any]], warmup: int, iterations: int) -> Samples:
    """:func:`measure` for a coroutine function."""
    for _ in range(warmup):
        await call()
    samples = Samples()
    cpu = time.process_time()
    for _ in range(iterations):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    samples.cpu = time.process_time() - cpu
    return samples


def emit(line: Dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def sync_cases(client: SessionsClient, warmup: int, iterations: int) -> None:
    session = client.create_session(ttl=900)
    try:
        interpreter = session.code_interpreter()
        commands = session.commands
        emit(figures("python-sync", "execute x = 1 + 1", measure(lambda: interpreter.execute(CODE), warmup, iterations)))
        emit(figures("python-sync", "commands true", measure(lambda: commands.run("true"), warmup, iterations)))
    finally:
        client.delete_session(session.session_id)


async def async_cases(client: AsyncSessionsClient, warmup: int, iterations: int) -> None:
    session = await client.create_session(ttl=900)
    try:
        interpreter = session.code_interpreter()
        commands = session.commands
        samples = await measure_async(lambda: interpreter.execute(CODE), warmup, iterations)
        emit(figures("python-async", "execute x = 1 + 1", samples))
        samples = await measure_async(lambda: commands.run("true"), warmup, iterations)
        emit(figures("python-async", "commands true", samples))
    finally:
        await client.delete_session(session.session_id)


async def concurrent_case(url: str, token: str, rounds: int) -> None:
    """100 contexts; ``rounds`` gathers of one execution on each from one loop, against the
    same executions one at a time through the blocking client."""
    async with AsyncSessionsClient(url, bearer_token=token) as client:
        sessions = await asyncio.gather(
            *(
                client.create_session(ttl=900, resources={"memoryMb": 2048})
                for _ in range(CONTEXTS // CONTEXTS_PER_SESSION)
            )
        )
        try:
            contexts = []
            for session in sessions:
                interpreter = session.code_interpreter()
                created = await asyncio.gather(
                    *(interpreter.create_context(kernel="python") for _ in range(CONTEXTS_PER_SESSION))
                )
                contexts += [(session, interpreter, ctx.id) for ctx in created]

            async def one_round() -> None:
                await asyncio.gather(*(i.execute(CODE, context_id=c) for _, i, c in contexts))

            await one_round()  # every worker started and warm
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(rounds):
                await one_round()
            per_second = rounds * len(contexts) / (time.perf_counter() - started)
            cpu_ms = (time.process_time() - cpu) / (rounds * len(contexts)) * 1000

            def sequential() -> float:
                with SessionsClient(url, bearer_token=token) as blocking:
                    targets = [
                        (blocking.session(s.session_id).code_interpreter(), c) for s, _, c in contexts
                    ]
                    for interpreter, ctx in targets[:10]:
                        interpreter.execute(CODE, context_id=ctx)
                    begun = time.perf_counter()
                    for _ in range(rounds):
                        for interpreter, ctx in targets:
                            interpreter.execute(CODE, context_id=ctx)
                    return rounds * len(targets) / (time.perf_counter() - begun)

            sync_per_second = await asyncio.to_thread(sequential)
        finally:
            await asyncio.gather(*(client.delete_session(s.session_id) for s in sessions))
    emit(
        {
            "client": "python-async",
            "case": "100 concurrent executions",
            "per_second": round(per_second, 1),
            "sync_per_second": round(sync_per_second, 1),
            "cpu_ms": round(cpu_ms, 3),
        }
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("HUTCH_URL"), help="the server's API URL (HUTCH_URL)")
    parser.add_argument("--token", default=os.environ.get("HUTCH_TOKEN"), help="a bearer token (HUTCH_TOKEN)")
    parser.add_argument("--quick", action="store_true", help="few iterations: checks that it runs")
    parser.add_argument("--iterations", type=int, help="measured calls per case (default 200, quick 20)")
    parser.add_argument("--warmup", type=int, help="unmeasured calls first (default 10, quick 3)")
    parser.add_argument(
        "--client", choices=("sync", "async", "concurrent"), help="only this client's figures (default: all)"
    )
    args = parser.parse_args(argv)
    if not args.url or not args.token:
        parser.error("--url and --token are required (or set HUTCH_URL and HUTCH_TOKEN)")
    iterations = args.iterations or (20 if args.quick else 200)
    if iterations < 1:
        parser.error("--iterations must be at least 1")
    warmup = args.warmup if args.warmup is not None else (3 if args.quick else 10)
    if warmup < 0:
        parser.error("--warmup must not be negative")
    rounds = 2 if args.quick else 10
    if args.client in (None, "sync"):
        with SessionsClient(args.url, bearer_token=args.token) as client:
            sync_cases(client, warmup, iterations)

    async def run_async() -> None:
        if args.client in (None, "async"):
            async with AsyncSessionsClient(args.url, bearer_token=args.token) as client:
                await async_cases(client, warmup, iterations)
        if args.client in (None, "concurrent"):
            await concurrent_case(args.url, args.token, rounds)

    if args.client != "sync":
        asyncio.run(run_async())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
