"""The daemon's start-up objects, kept out of the cyclic garbage collector's full passes.

By the time the daemon follows its logs it holds ~70,000 objects it keeps for its whole life:
modules, compiled rules, the dashboard's FastAPI app and its pydantic models. CPython's full
collection (generation 2) walks every one of them, and a catch-up after downtime triggers one
every few thousand requests: each trace lives from its first line until the commit that stores
it, long enough to be promoted to the oldest generation, and enough of them piling up there sets
off a full pass. Catching up 200,000 requests ran 20 full passes costing 0.6-0.9 s of CPU, a tenth
of the daemon's time (tests/bench/bench_daemon.py --only catchup); with those objects frozen
(`gc.freeze`, moved to a generation no collection visits) the same passes cost 0.05 s.

Frozen objects are never freed, so what is frozen must be what the daemon keeps anyway: it is
done once start-up is over (a collection there first found nothing to free, for 40 ms of CPU),
and a reload, which replaces the rules and the alert sinks, thaws everything and collects before
freezing again, so the replaced ones can go.
"""

from __future__ import annotations

import gc


def freeze_startup() -> None:
    """Start-up is over: what exists now lives as long as the daemon."""
    gc.freeze()


def refreeze() -> None:
    """After a reload: let the objects it replaced be collected, then freeze what is kept."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
