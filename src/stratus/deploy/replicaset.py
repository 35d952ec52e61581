"""The replica set: start a target's replicas on a placement and wait until they are ready, drain and stop
them, retire a whole target. The only part of the controller that starts or stops processes; the
rollouts, the supervisor and the autoscaler decide, and ask it.

Readiness and health are probed through injected callables, so tests run it on a fake placement.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import httpx

from stratus.deploy.clock import Clock
from stratus.deploy.replicas import Placement, ReplicaProcess, check_health, wait_ready
from stratus.deploy.router import Replica, TargetRuntime

READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 30.0

#: Records one event of the endpoint revision a replica serves: (kind, detail).
Report = Callable[[str, dict[str, object]], None]
#: Blocks until the process is ready (True) or gave up (False).
ReadyProbe = Callable[[ReplicaProcess], bool]
#: One health check of a ready process.
HealthProbe = Callable[[ReplicaProcess], bool]


class HttpProbes:
    """Readiness and health over the replicas' /v2/health/ready (the real placement's probes)."""

    def __init__(self) -> None:
        self._http = httpx.Client()

    def ready(self, process: ReplicaProcess) -> bool:
        return wait_ready(process, READY_TIMEOUT_S, self._http)

    def healthy(self, process: ReplicaProcess) -> bool:
        return check_health(process, self._http, timeout_s=0.5)

    def close(self) -> None:
        self._http.close()


class ReplicaSet:
    def __init__(self, placement: Placement, clock: Clock, ready: ReadyProbe, healthy: HealthProbe) -> None:
        self.placement = placement
        self._clock = clock
        self._ready = ready
        self.healthy = healthy
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- launch ------------------------------------------------------------------------------------------

    def reserve(self, target: TargetRuntime) -> bool:
        """Count a start as pending unless one already is (True: this caller starts it). Counted under the
        lock, so concurrent requests to a target at zero start only one replica."""
        with self._lock:
            if target.live() or target.pending_starts:
                return False
            target.pending_starts += 1
            return True

    def launch(self, target: TargetRuntime, report: Report, counted: bool = False) -> Replica | None:
        """Start one replica of ``target`` and wait until it is ready (None: it did not become ready)."""
        if not counted:
            with self._lock:
                target.pending_starts += 1
        try:
            process = self.placement.start(target.entries)
            replica = Replica(f"r{next(self._ids)}", process)
            with self._lock:
                target.replicas.append(replica)
        finally:
            with self._lock:
                target.pending_starts -= 1
        if self._ready(process) and replica.state == "starting":
            replica.ready_at = self._clock.now()
            replica.state = "ready"
            target.replica_ready()  # requests waiting for a replica (scale from zero, restarts) go now
            return replica
        replica.state = "dead"
        process.kill()
        self._forget(target, replica)
        report("replica_failed", {"target": target.label})
        return None

    def launch_async(
        self, target: TargetRuntime, report: Report, then: Callable[[Replica | None], None], counted: bool = False
    ) -> None:
        if not counted:
            with self._lock:
                target.pending_starts += 1

        def run() -> None:
            then(self.launch(target, report, counted=True))

        threading.Thread(target=run, name="stratus-replica-start", daemon=True).start()

    def bring_up(self, wanted: list[tuple[TargetRuntime, int]], report: Report) -> bool:
        """Start what each target lacks of its wanted count, in parallel, and wait for them; True when
        every one became ready."""
        results: list[Replica | None] = []
        threads = []
        for target, count in wanted:
            for _ in range(count - len(target.live())):
                with self._lock:
                    target.pending_starts += 1
                thread = threading.Thread(
                    target=lambda t=target: results.append(self.launch(t, report, counted=True)), daemon=True
                )
                thread.start()
                threads.append(thread)
        for thread in threads:
            thread.join()
        return all(r is not None for r in results)

    # -- drain and stop ----------------------------------------------------------------------------------

    def drain(self, replica: Replica) -> None:
        """Stop routing to the replica, let its requests finish (the router signals ``drained`` when the
        last one does), then stop its process."""
        replica.state = "draining"
        if replica.outstanding > 0:
            self._clock.wait(replica.drained, DRAIN_TIMEOUT_S)
        replica.state = "stopped"
        replica.process.stop()

    def remove_async(self, target: TargetRuntime, replica: Replica) -> None:
        """Drain one replica in the background and take it out of the target."""
        replica.state = "draining"

        def stop() -> None:
            self.drain(replica)
            self._forget(target, replica)

        threading.Thread(target=stop, name="stratus-replica-stop", daemon=True).start()

    def retire(self, target: TargetRuntime) -> None:
        """Drain and stop every replica of a target no longer routed to."""
        replicas = list(target.replicas)
        for replica in replicas:
            replica.state = "draining"
        for replica in replicas:
            self.drain(replica)
        with self._lock:
            target.replicas.clear()

    def kill(self, target: TargetRuntime, replica: Replica) -> None:
        """Kill a replica found dead (it exited, dropped a connection or failed its health checks)."""
        replica.state = "dead"
        replica.process.kill()
        self._forget(target, replica)

    def kill_all(self, targets: list[TargetRuntime]) -> None:
        for target in targets:
            for replica in list(target.replicas):
                replica.state = "stopped"
                replica.process.kill()

    def _forget(self, target: TargetRuntime, replica: Replica) -> None:
        with self._lock:
            if replica in target.replicas:
                target.replicas.remove(replica)
