"""The one private-file writer: 0600 from creation, atomic, create-only without a race."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from stratus.files import write_private


def test_written_owner_only_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "secret.key"
    assert write_private(path, b"one")
    assert path.read_bytes() == b"one" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_private(path, b"two")
    assert path.read_bytes() == b"two" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary file left


def test_create_only_keeps_the_first_writer(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def create(n: int) -> None:
        barrier.wait()
        results.append(write_private(path, f"writer {n}".encode(), replace=False))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert path.read_bytes().startswith(b"writer ")
    assert not write_private(path, b"late", replace=False) and path.read_bytes() != b"late"
    assert [p.name for p in tmp_path.iterdir()] == ["pepper"]
