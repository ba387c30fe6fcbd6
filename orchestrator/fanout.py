"""Run one function on every host in parallel; results per host, and one error naming every failure."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from .errors import HostErrors

K = TypeVar("K")
V = TypeVar("V")


def fanout(items: Iterable[tuple[str, K]], fn: Callable[[K], V], step: str,
           raise_errors: bool = True) -> tuple[dict[str, V], dict[str, BaseException]]:
    """Call ``fn(item)`` for each ``(host_label, item)`` at once. Returns (results, failures) keyed by host,
    in the order given; with ``raise_errors`` any failure raises one ``HostErrors`` naming them all
    (after every call has finished, so nothing is left half-done in the background)."""
    items = list(items)
    results: dict[str, V] = {}
    failures: dict[str, BaseException] = {}
    if not items:
        return results, failures
    with ThreadPoolExecutor(max_workers=min(64, len(items)), thread_name_prefix="fanout") as pool:
        futures = [(label, pool.submit(fn, item)) for label, item in items]
        for label, fut in futures:
            try:
                results[label] = fut.result()
            except Exception as err:  # noqa: BLE001 - every failure is reported, per host
                failures[label] = err
    if failures and raise_errors:
        raise HostErrors(step, failures)
    return results, failures
