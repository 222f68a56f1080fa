"""Prometheus metrics for operators: ``callflow serve --metrics`` (``Settings.metrics``).

Off by default, and then free: the app holds ``metrics = None`` and each hook is one
``is not None`` test; ``prometheus_client`` is not even imported. On, each hook is a counter
increment or a histogram observation on a child whose labels were resolved once.

The figures are served at ``{path_prefix}/{secret}/metrics`` (behind the webhook secret, like
the health figures). Under ``--workers`` the parent makes a directory for
``prometheus_client``'s multiprocess mode before it forks (``shared_across_workers``): every
worker writes its figures there, and whichever worker answers a scrape sums them all.
The names and labels are in docs/reference/metrics.md.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from .stores import Store

__all__ = ("MULTIPROC_ENV", "Metrics", "TimedStore", "shared_across_workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: a reply usually takes a millisecond; the response budget is 2 s."""

STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:  # pragma: no cover - the dev extra installs it
        raise ConfigurationError(
            "metrics need prometheus_client: pip install \"callflow[metrics]\"") from None
    return prometheus_client


class Metrics:
    """One app's figures, and the text a scrape gets."""

    def __init__(self, platform: str) -> None:
        prom = _prometheus()
        self.platform = platform
        self.shared = bool(os.environ.get(MULTIPROC_ENV))
        if self.shared and prom.values.ValueClass is prom.values.MutexValue:
            # prometheus_client was imported before the directory was chosen (by the flows
            # file, say): values made from now on go to the directory's files.
            prom.values.ValueClass = prom.values.get_value_class()
        # Shared: the values go to the directory's files, and a scrape reads them all; the
        # metric objects belong to no registry. Alone: this app's own registry, so two apps
        # in one process (tests) keep apart.
        registry: CollectorRegistry | None = None if self.shared else prom.CollectorRegistry()
        self._registry = registry

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return cast("Counter", prom.Counter(name, doc, labels, registry=registry))

        self.calls_started = counter(
            "callflow_calls_started", "Calls whose flow started, by flow and direction.",
            ("flow", "direction"))
        self.calls_ended = counter(
            "callflow_calls_ended",
            "Calls whose flow is over, by flow and outcome: completed (the flow or the app "
            "ended it), "
            "caller_hung_up, error (the flow raised, or stalled).",
            ("flow", "outcome"))
        self.calls_live = prom.Gauge(
            "callflow_calls_live", "Calls started and not yet ended (summed over workers).",
            registry=registry, multiprocess_mode="sum")
        self.flow_errors = counter(
            "callflow_flow_errors", "Flows that raised (the caller got the apology), by flow.",
            ("flow",))
        self.notifications = counter(
            "callflow_notifications", "Notifications received, by platform and event kind.",
            ("platform", "kind"))
        self.reply_seconds = cast("Histogram", prom.Histogram(
            "callflow_reply_seconds",
            "Seconds from a webhook's body read to its reply ready, by platform.",
            ("platform",), registry=registry, buckets=REPLY_BUCKETS))
        self.pushes = counter(
            "callflow_pushes",
            "Command batches sent by REST, not in a reply (BlueVia setcommands, Twilio call "
            "update, each Telnyx command), by platform.", ("platform",))
        self.platform_errors = counter(
            "callflow_platform_errors",
            "Platform REST requests that failed for good, by platform and operation.",
            ("platform", "operation"))
        self.platform_retries = counter(
            "callflow_platform_retries",
            "Platform REST requests tried again after a failure, by platform and operation.",
            ("platform", "operation"))
        self.store_seconds = cast("Histogram", prom.Histogram(
            "callflow_store_seconds",
            "Seconds each call store operation took (durable mode), by operation.",
            ("operation",), registry=registry, buckets=STORE_BUCKETS))
        # Children by label values, resolved once: ``labels()`` takes a lock and builds a key.
        self._kinds: dict[str, Any] = {}
        self._started: dict[tuple[str, str], Any] = {}
        self._ended: dict[tuple[str, str], Any] = {}
        self._reply = self.reply_seconds.labels(platform)
        self._pushes = self.pushes.labels(platform)

    # -- the hooks ----------------------------------------------------------------------

    def notification(self, kind: str) -> None:
        child = self._kinds.get(kind)
        if child is None:
            child = self._kinds[kind] = self.notifications.labels(self.platform, kind)
        child.inc()

    def replied(self, started: float) -> None:
        self._reply.observe(time.perf_counter() - started)

    def call_started(self, flow: str, direction: str) -> None:
        child = self._started.get((flow, direction))
        if child is None:
            child = self._started[flow, direction] = self.calls_started.labels(flow, direction)
        child.inc()
        self.calls_live.inc()

    def call_ended(self, flow: str, outcome: str) -> None:
        child = self._ended.get((flow, outcome))
        if child is None:
            child = self._ended[flow, outcome] = self.calls_ended.labels(flow, outcome)
        child.inc()
        self.calls_live.dec()
        if outcome == "error":
            self.flow_errors.labels(flow).inc()

    def pushed(self) -> None:
        self._pushes.inc()

    def platform_error(self, operation: str) -> None:
        self.platform_errors.labels(self.platform, operation).inc()

    def platform_retry(self, operation: str) -> None:
        self.platform_retries.labels(self.platform, operation).inc()

    # -- the scrape -----------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every figure (of every worker, when shared), and its type."""
        prom = _prometheus()
        registry = self._registry
        if registry is None:
            multiprocess: Any = importlib.import_module("prometheus_client.multiprocess")
            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return prom.generate_latest(registry), str(prom.CONTENT_TYPE_LATEST)


class TimedStore:
    """A store whose every coroutine method's time goes into ``callflow_store_seconds``.

    Wrapped around the store only when metrics are on, so the store's code stays unaware.
    """

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._histogram = metrics.store_seconds
        self._timed: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value) or name.startswith("_"):
            return value
        timed = self._timed.get(name)
        if timed is not None:
            return timed
        import inspect

        if not inspect.iscoroutinefunction(value):
            return value
        child = self._histogram.labels(name)

        async def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await value(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - started)

        self._timed[name] = timed_call
        return timed_call


@contextlib.contextmanager
def shared_across_workers(enabled: bool) -> Iterator[None]:
    """Before forking workers: a fresh directory for their figures, removed afterwards.

    Set before any worker imports ``prometheus_client`` (it reads the variable then).
    """
    if not enabled or os.environ.get(MULTIPROC_ENV):
        yield  # off, or the operator chose the directory (and cleans it)
        return
    directory = tempfile.mkdtemp(prefix="callflow-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
