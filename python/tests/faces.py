"""Runs the synchronous tests through the async client as well.

``blocking(obj)`` wraps an object of the async SDK so that synchronous test code can drive it
as if it were the blocking SDK: a method that returns a coroutine is run to its end on an event
loop in a background thread, async iterators are iterated, async context managers are entered,
and every SDK object a call returns is wrapped the same way. Models (results, infos) come back
as they are, so one test body checks both faces.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Iterator, Optional

_loop: Optional[asyncio.AbstractEventLoop] = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    """The event loop the async faces run on (started on first use, in a daemon thread)."""
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="async-face", daemon=True).start()
        return _loop


def run(awaitable: Any) -> Any:
    """Runs ``awaitable`` on the loop and returns its result (or raises its exception)."""

    async def wrapper() -> Any:
        return await awaitable

    return asyncio.run_coroutine_threadsafe(wrapper(), loop()).result()


def _is_async_face(value: Any) -> bool:
    module = type(value).__module__ or ""
    return module.startswith("hutch") and type(value).__name__.startswith("Async")


def blocking(value: Any) -> Any:
    """``value`` made usable from synchronous code (see the module's description)."""
    if inspect.isawaitable(value):
        return blocking(run(value))
    if isinstance(value, list):
        return [blocking(v) for v in value]
    if inspect.isasyncgen(value) or _is_async_face(value) or hasattr(value, "__aenter__"):
        return Blocking(value)
    return value


class Blocking:
    """A synchronous proxy of one async SDK object."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # so that isinstance() sees the wrapped class
        return type(self._target)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if callable(attr) and not isinstance(attr, type):
            return lambda *args, **kwargs: blocking(attr(*args, **kwargs))
        return blocking(attr)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __iter__(self) -> Iterator[Any]:
        target = self._target
        if hasattr(target, "__aiter__"):
            iterator = target.__aiter__()
            while True:
                try:
                    item = run(iterator.__anext__())
                except StopAsyncIteration:
                    return
                yield blocking(item)
        else:
            for item in target:
                yield blocking(item)

    def __enter__(self) -> Any:
        return blocking(run(self._target.__aenter__()))

    def __exit__(self, *exc: Any) -> Any:
        return run(self._target.__aexit__(*exc))

    def __len__(self) -> int:
        return len(self._target)

    def __getitem__(self, key: Any) -> Any:
        return blocking(self._target[key])

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Blocking):
            other = object.__getattribute__(other, "_target")
        return bool(self._target == other)

    def __hash__(self) -> int:
        return hash(self._target)

    def __repr__(self) -> str:
        return f"blocking({self._target!r})"
