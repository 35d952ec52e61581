"""Non-IID shards of scikit-learn's digits for federation tests and the benchmark: each client mostly holds a few
classes (``MAJOR`` of its rows) and a little of every other class."""

from __future__ import annotations

import io

import numpy as np

#: Each client's main classes (3-4 each, covering the ten digits).
CLASSES = ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9])
MAJOR = 0.9


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 1, 8, 8).astype(np.float32), y.astype(np.int64)


def shard_rows(y: np.ndarray, clients: int = 3, seed: int = 0, limit: int | None = None) -> list[np.ndarray]:
    """Disjoint row indices per client: its main classes' rows, plus other classes' rows so they are 1 - MAJOR."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    taken = np.zeros(len(y), dtype=bool)
    shards = []
    for client in range(clients):
        main = [i for i in order if y[i] in CLASSES[client] and not taken[i]]
        if limit is not None:
            main = main[: int(limit * MAJOR)]
        taken[main] = True
        extra_count = int(len(main) * (1 - MAJOR) / MAJOR)
        extra = [i for i in order if y[i] not in CLASSES[client] and not taken[i]][:extra_count]
        taken[extra] = True
        shards.append(np.array(main + extra))
    return shards


def npz_bytes(X: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()
