"""The autoscaler: how many replicas a target should have, decided by a pure function of its recent load
(``scale_decision``), the way batching decides through ``take_batch``. The ``Autoscaler`` only keeps each
target's load samples and the time of its last change, and acts on the decision through the replica set.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stratus.deploy.clock import Clock
from stratus.deploy.replicaset import ReplicaSet, Report
from stratus.deploy.router import Replica, TargetRuntime
from stratus.deploy.spec import ScalingSpec

#: One load sample: (time, requests in flight on the target).
Sample = tuple[float, int]

#: Down only with this margin below what one replica fewer could take, so load near a boundary does not
#: add and remove a replica in turn.
DOWN_MARGIN = 0.7


def scale_decision(
    samples: Sequence[Sample],
    spec: ScalingSpec,
    live: int,
    now: float,
    last_scale: float,
    last_request: float = -math.inf,
) -> int:
    """The number of replicas the target should have (``live`` when nothing should change).

    ``samples`` are the in-flight counts seen over at least ``max(scale_up_seconds, cooldown_seconds)``,
    oldest first; ``last_scale`` and ``last_request`` are times on the same clock as ``now``.
    Up when the load over ``scale_up_seconds`` is above ``target_in_flight`` per replica (to as many as
    that load needs); down by one after ``cooldown_seconds`` of load that one replica fewer takes with a
    margin; to zero (when ``min_replicas`` is 0) after a cooldown with nothing in flight and no request.
    At zero the decision is the router's (the next request starts a replica), not this function's.
    """
    if live == 0 or not samples:
        return live
    since_scale = now - last_scale
    up_window = [n for t, n in samples if t >= now - spec.scale_up_seconds]
    spanned = samples[0][0] <= now - spec.scale_up_seconds * 0.9
    pressure = sum(up_window) / len(up_window) if up_window else 0.0
    if (
        live < spec.max_replicas
        and spanned
        and since_scale >= spec.scale_up_seconds
        and pressure > spec.target_in_flight * live
    ):
        wanted = min(spec.max_replicas, math.ceil(pressure / spec.target_in_flight))
        return max(wanted, live + 1)
    quiet = samples[0][0] <= now - spec.cooldown_seconds * 0.95 and since_scale >= spec.cooldown_seconds
    if not quiet:
        return live
    average = sum(n for _, n in samples) / len(samples)
    if live > max(spec.min_replicas, 1) and average <= DOWN_MARGIN * spec.target_in_flight * (live - 1):
        return live - 1
    if (
        live == 1
        and spec.min_replicas == 0
        and all(n == 0 for _, n in samples)
        and now - last_request >= spec.cooldown_seconds
    ):
        return 0
    return live


def trim(samples: deque[Sample], spec: ScalingSpec, now: float) -> None:
    """Drop samples older than the longest window ``scale_decision`` reads."""
    horizon = max(spec.scale_up_seconds, spec.cooldown_seconds)
    while samples and samples[0][0] < now - horizon:
        samples.popleft()


@dataclass
class _Load:
    samples: deque[Sample] = field(default_factory=deque)
    last_scale: float = -math.inf


#: Told of every change: (target, from, to).
ScaleListener = Callable[[TargetRuntime, int, int], None]


class Autoscaler:
    def __init__(self, replicas: ReplicaSet, clock: Clock) -> None:
        self._replicas = replicas
        self._clock = clock
        # Per target, forgotten with it (a weak map: no id() keys that a new object could reuse).
        self._load: weakref.WeakKeyDictionary[TargetRuntime, _Load] = weakref.WeakKeyDictionary()

    def forget(self, target: TargetRuntime) -> None:
        self._load.pop(target, None)

    def scaled(self, target: TargetRuntime) -> None:
        """A replica was added outside ``step`` (scale from zero): the cooldowns start again."""
        self._load.setdefault(target, _Load()).last_scale = self._clock.now()

    def step(self, target: TargetRuntime, spec: ScalingSpec, report: Report, changed: ScaleListener) -> int:
        """Sample the target's load, decide, and act; returns the replica count it asked for."""
        now = self._clock.now()
        load = self._load.setdefault(target, _Load())
        load.samples.append((now, target.in_flight()))
        trim(load.samples, spec, now)
        live = len(target.live())
        if target.pending_starts or any(r.state in ("starting", "dead") for r in target.replicas):
            return live  # a replica is being started or replaced: judge the load once the set is stable
        wanted = scale_decision(load.samples, spec, live, now, load.last_scale, target.last_request)
        if wanted == live:
            return live
        load.last_scale = now
        load.samples.clear()
        changed(target, live, wanted)
        if wanted > live:
            for _ in range(wanted - live):
                self._replicas.launch_async(target, report, _ignore)
        else:
            ready = sorted(target.ready(), key=lambda r: r.outstanding)
            for replica in ready[: live - wanted]:
                self._replicas.remove_async(target, replica)
        return wanted


def _ignore(_replica: Replica | None) -> None:
    """A replica added by the autoscaler needs no follow-up: the next step sees it."""
