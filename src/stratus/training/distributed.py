"""Data-parallel training (``train --workers N``): the training child, itself running on a Ray node (the Ray
executor's job actor started it), becomes a Ray driver and runs the torch trainer as a Ray Train job:
``TorchTrainer`` with N workers on the gloo backend (CPU), each asking for the job's CPUs and memory per worker,
spread over the nodes (``SPREAD``). What each worker runs is training/distributed_loop.py.

- Failed workers: Ray Train's ``FailureConfig(max_failures=...)`` restarts the worker group, which resumes from
  the last checkpoint Ray Train holds; no retry loop here.
- Progress: the workers put their events (where each runs, each epoch, each checkpoint) in a Ray queue this driver
  drains and prints as the child's progress lines, like a one-process job's. The server keeps each checkpoint line
  in the artifact store.
- Cancel and timeout: the server kills the job's actor, this child goes with it (its lifeline), and Ray ends the
  actors a dead driver owned: the Train controller and its workers.
- Ray Train's storage path is this job's private folder on the node (in memory when /dev/shm is there); the
  checkpoints in it are sealed under a key made for this run, which travels only inside the run's config.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle  # the run's payload only, sealed (AES-GCM) under the run's own key
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from stratus.raycluster import NAMESPACE, seal
from stratus.training import checkpoint
from stratus.training.params import TrainParams
from stratus.training.torch_trainers import TorchSetup

#: Ray Train restarts a failed worker group this many times before the job fails.
MAX_FAILURES = 2
#: How often Ray Train's controller polls the workers (their health, their reports), in seconds.
POLL_S = 0.25

Report = Callable[[dict[str, Any]], None]


def train_distributed(
    setup: TorchSetup,
    params: TrainParams,
    *,
    workers: int,
    cpus_per_worker: float,
    memory_mb_per_worker: int,
    job_dir: Path,
    job_id: str,
    report: Report,
    resume: bytes | None = None,
) -> nn.Module:
    """Train ``setup.model`` on N Ray Train workers; return it with the trained weights."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    ray.init(
        address=os.environ.get("RAY_ADDRESS") or "auto",
        namespace=NAMESPACE,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
        # Ray Train's controller takes each report in at its poll of the workers (every 2 s by default), and a
        # worker's next report waits for that: a short poll keeps the per-epoch checkpoint cheap and makes a
        # reported checkpoint the one a restarted worker group resumes from within a moment.
        runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(POLL_S)}},
    )
    key, sealed = seal(
        pickle.dumps(
            {
                "model": setup.model,
                "inputs": setup.inputs,
                "labels": setup.labels,
                "classify": setup.classify,
                "augment": setup.augment,
                "val_inputs": setup.val_inputs,
                "val_labels": setup.val_labels,
            }
        )
    )
    events = Queue(actor_options={"num_cpus": 0})
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if memory_mb_per_worker > 0:
        resources["memory"] = float(memory_mb_per_worker * 1024 * 1024)
    report({"event": "log", "message": f"data-parallel: {workers} Ray Train workers, {resources} each, gloo (CPU)"})
    config = {
        "payload": ray.put(sealed),
        "key": key,
        "params": params.model_dump(),
        "events": events,
        "threads": max(1, int(cpus_per_worker)),
        "resume": seal(resume, key)[1] if resume is not None else None,
    }
    from stratus.training.distributed_loop import train_loop

    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=False, resources_per_worker=resources, placement_strategy="SPREAD"
        ),
        run_config=RunConfig(
            name=f"stratus-{job_id}-{os.getpid()}",  # a fresh run: Ray Train would resume a same-named one
            storage_path=str(job_dir / "ray-train"),
            failure_config=FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    final: dict[str, bytes] = {}
    done = threading.Event()

    def relay() -> None:
        """The workers' events become this child's progress lines, in the order they were put."""
        while True:
            try:
                event = events.get(timeout=0.5)
            except Empty:
                if done.is_set():
                    return
                continue
            if event.get("event") == "final":
                final["state"] = base64.b64decode(event["state"])
            else:
                report(event)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        trainer.fit()
    finally:
        done.set()
        thread.join()
        # Ray Train's copies (sealed) are of no use once it has ended: not among the files the job hands back.
        shutil.rmtree(job_dir / "ray-train", ignore_errors=True)
    if "state" not in final:
        raise RuntimeError("the Ray Train job ended without its final weights")
    setup.model.load_state_dict(checkpoint.unpack(final["state"]).model)
    setup.model.eval()
    return setup.model


__all__ = ["MAX_FAILURES", "train_distributed"]
