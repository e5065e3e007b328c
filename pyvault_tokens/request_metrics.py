"""Prometheus metrics of the ASGI middleware: outcomes and validation latency.

``pyvault_requests_total{outcome}`` counts the requests the middleware decided, by
outcome: ``ok`` (valid, nothing refreshed), ``refreshed`` (the response carried
``X-Token-Expires``, and ``X-New-Token`` when there is a new secret), ``401``, ``403``
(the database's or a route's scope check), ``503``, and ``anonymous`` (no token where
the middleware is optional). Exempt paths and CORS preflights are not counted.
``pyvault_validation_seconds`` is a histogram of the time spent asking the database,
per request (replica and primary together), failures included. The Node middleware
uses the same names.

Optional: without prometheus_client installed, and no registry given, nothing is
recorded. The metrics are made once per registry, so any number of middleware
instances share them.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

OUTCOMES = ("ok", "refreshed", "401", "403", "503", "anonymous")
REQUESTS_NAME = "pyvault_requests_total"
LATENCY_NAME = "pyvault_validation_seconds"
# One index probe is well under a millisecond; a pool wait or a failover takes seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[Any, RequestMetrics] = weakref.WeakKeyDictionary()


class RequestMetrics:
    """The two metrics, registered in ``registry``."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(REQUESTS_NAME, "Requests decided by the pyvault-tokens "
                                "middleware, by outcome", ["outcome"], registry=registry)
        self.latency = Histogram(LATENCY_NAME, "Time spent validating a token in the "
                                 "database, per request", buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self._children = {o: self.requests.labels(outcome=o) for o in OUTCOMES}

    def count(self, outcome: str) -> None:
        self._children[outcome].inc()

    def observe(self, seconds: float) -> None:
        self.latency.observe(seconds)


def request_metrics(registry: Any = None) -> RequestMetrics | None:
    """The metrics in ``registry`` (default: prometheus_client's REGISTRY when it is
    installed); None when prometheus_client is missing and no registry was given, or
    when ``registry`` is False."""
    if registry is False:
        return None
    if registry is None:
        try:
            from prometheus_client import REGISTRY
        except ImportError:
            return None
        registry = REGISTRY
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = RequestMetrics(registry)
        return metrics
