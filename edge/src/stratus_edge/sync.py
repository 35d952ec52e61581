"""Keeping the bundle current and the telemetry delivered: one background thread per runner.

Each round asks the cloud for the model's alias with the served bundle's ETag (If-None-Match): 304 when nothing
changed. A new bundle is downloaded, unpacked, verified (signature, then every file's checksum) and loaded
here, off the serving path; the holder then switches to it between two requests. A bundle that fails is
refused and reported (``/edge/status``, the device's health in the cloud), and its ETag is remembered so it is
not downloaded again until the alias moves on; the served bundle stays. Then sealed telemetry batches are
uploaded, oldest first, until one fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any
from urllib.parse import urlencode

import orjson

from stratus_edge import bundle, cloud
from stratus_edge.model import Holder, Loaded, load
from stratus_edge.state import State
from stratus_edge.telemetry import Telemetry

log = logging.getLogger("stratus_edge.sync")
#: A test hook (docs/edge.md): kill the runner with SIGKILL after the cloud counted a batch and before the
#: runner deleted it, the worst moment for a crash.
FAULT_ENV = "STRATUS_EDGE_FAULT"


class Syncer:
    def __init__(
        self,
        state: State,
        holder: Holder,
        telemetry: Telemetry | None,
        *,
        cloud_url: str,
        key: str,
        model: str,
        ref: str | None,
        interval_s: float,
        executor: Executor,
        threads: int,
        trusted_extra: list[str] | None = None,
        on_switch: Callable[[Loaded], None] | None = None,
    ) -> None:
        self.state, self.holder, self.telemetry = state, holder, telemetry
        self.cloud_url, self.key, self.model, self.ref = cloud_url, key, model, ref
        self.interval_s = interval_s
        self._executor, self._threads = executor, threads
        self._trusted_extra = trusted_extra or []
        self._on_switch = on_switch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stratus-edge-sync", daemon=True)
        self.status: dict[str, Any] = {"cloud": "unknown", "last_contact": None, "refused": [], "uploaded_batches": 0}
        self._refused_etag: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._guarded(self.sync_once)
            if self.telemetry is not None:
                self.telemetry.seal()  # offline too: what was answered is a batch on disk, whatever comes next
                self._guarded(self.upload_once)
            self._stop.wait(self.interval_s)

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except cloud.Unreachable as exc:
            self.status["cloud"] = "unreachable"
            log.info("cloud unreachable: %s", exc)
        except Exception:  # a round must never end the thread: the next one tries again
            log.exception("sync round failed")

    def health(self) -> str:
        refused = self.status["refused"]
        return f"refused: {refused[-1]}"[:200] if refused and refused[-1]["etag"] == self._refused_etag else "ok"

    def sync_once(self) -> bool:
        """One round: True when a new bundle is now served."""
        current = self.holder.current
        etag = self._refused_etag or (current.etag if current else None)
        query = urlencode({"model": self.model, **({"ref": self.ref} if self.ref else {})})
        headers = self._headers() | ({"If-None-Match": etag} if etag else {})
        answer = cloud.call(self.cloud_url, "GET", f"/api/v1/device/bundle?{query}", headers=headers, timeout_s=60)
        self.status["last_contact"] = time.time()
        if answer.status == 304:
            self.status["cloud"] = "reachable"
            return False
        if answer.status != 200:
            self.status["cloud"] = f"answered {answer.status}: {answer.body[:200].decode(errors='replace')}"
            log.warning("the cloud refused the sync: %s", self.status["cloud"])
            return False
        self.status["cloud"] = "reachable"
        new_etag = answer.headers.get("etag", "")
        try:
            loaded = self.accept(answer.body)
        except bundle.BundleRefused as exc:
            self._refused_etag = new_etag
            self.status["refused"] = [*self.status["refused"][-4:], {"etag": new_etag, "reason": str(exc)}]
            log.error("refused the bundle %s from the cloud: %s", new_etag, exc)
            return False
        self._refused_etag = None
        log.info("now serving %s", loaded.label)
        return True

    def accept(self, data: bytes) -> Loaded:
        """Unpack, verify and load a downloaded bundle, then switch to it. Raises BundleRefused."""
        folder = bundle.unpack(data, self.state.bundles)
        try:
            verified = bundle.verify(folder, self.state.trusted(self._trusted_extra), self.state.device_key())
        except bundle.BundleRefused:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        installed = bundle.install(folder, self.state.bundles, State.bundle_name(verified))
        loaded = load(verified, self._executor, self._threads)
        self.holder.swap(loaded)
        self.state.make_current(installed)
        if self._on_switch is not None:
            self._on_switch(loaded)
        return loaded

    def upload_once(self) -> int:
        """Upload sealed batches, oldest first, until one fails; returns how many the cloud acknowledged."""
        assert self.telemetry is not None
        current = self.holder.current
        done = 0
        for path in self.telemetry.batches():
            body = self.telemetry.summarize(path)
            body |= {"bundle": current.label if current else "", "health": self.health()}
            answer = cloud.call(
                self.cloud_url,
                "POST",
                "/api/v1/device/telemetry",
                body=orjson.dumps(body),
                headers=self._headers() | {"Content-Type": "application/json"},
                timeout_s=30,
            )
            if answer.status != 200:
                self.status["cloud"] = f"telemetry answered {answer.status}"
                return done
            if os.environ.get(FAULT_ENV) == "kill-after-upload":
                os.kill(os.getpid(), signal.SIGKILL)
            path.unlink(missing_ok=True)
            done += 1
            self.status["uploaded_batches"] += 1
        return done
