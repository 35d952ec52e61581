from __future__ import annotations

from pathlib import Path

import torch

from stratus.jobs import JobService
from stratus.registry import RegistryService
from stratus.security.encryption import Keyring
from stratus.store import ArtifactStore, Database
from stratus.store.tables import Job, JobEvent
from stratus.training import DatasetService
from stratus.training.jobs import TrainingJobs
from stratus.training.torch_trainers import augment


def test_augmentation_keeps_shape_and_changes_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    for kinds in (["flip"], ["crop"], ["rotate"], ["flip", "crop", "rotate"]):
        out = augment(x, kinds, generator)
        assert out.shape == x.shape
    flipped = [augment(x, ["flip"], torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(torch.equal(f[0], x[0].flip(-1)) for f in flipped)
    rotated = augment(x, ["rotate"], torch.Generator().manual_seed(1))
    assert not torch.equal(rotated, x)


def test_recover_requeues_while_retries_remain(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    registry = RegistryService(db, ArtifactStore(tmp_path / "a", Keyring.generate()))
    jobs = JobService(registry, tmp_path / "jobs")
    TrainingJobs(registry, DatasetService(registry), jobs)
    project = registry.projects.current_id()
    with db.write() as s:
        s.add(Job(id="a" * 32, project_id=project, kind="train", state="running", retries=1, attempts=1))
        s.add(Job(id="b" * 32, project_id=project, kind="train", state="running", retries=0, attempts=1))
        s.add(Job(id="c" * 32, project_id=project, kind="train", state="succeeded", attempts=1))
    (tmp_path / "jobs" / ("a" * 32)).mkdir(parents=True)
    assert jobs.recover() == 2
    assert jobs.get("a" * 32)["state"] == "queued"
    failed = jobs.get("b" * 32)
    assert failed["state"] == "failed" and "server stopped" in failed["error"]
    assert jobs.get("c" * 32)["state"] == "succeeded"
    assert not (tmp_path / "jobs" / ("a" * 32)).exists()
    with db.read() as s:
        assert s.query(JobEvent).count() == 2
