"""The in-process ceiling: plain ONNX Runtime on the same model files and thread count as the server."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stratus.runtime import session_options


def _rate(run: Callable[[], Any], items: int, seconds: float) -> float:
    run()  # warm-up
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        done += items
    return done / (time.perf_counter() - started)


def iris_ceiling(model: Path, threads: int, seconds: float) -> dict[int, float]:
    session = ort.InferenceSession(model.read_bytes(), session_options(threads), providers=["CPUExecutionProvider"])
    rates = {}
    for batch in (1, 8, 32, 64, 256):
        x = np.tile(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32), (batch, 1))
        rates[batch] = _rate(lambda x=x: session.run(None, {"input": x}), batch, seconds)
    return rates


def minilm_ceiling(
    encoder: Path,
    tokenizer_json: Path,
    texts: list[str],
    threads: int,
    seconds: float,
    batches: tuple[int, ...] = (1, 4, 8, 16, 32),
    parallel: int = 1,
) -> dict[int, float]:
    """Encoder only, on pre-tokenized batches: the strict ceiling (tokenizing is serving overhead).

    Batches rotate through all the texts, each padded to its own longest row, as served batches are.
    ``parallel`` > 1 runs that many batches at once on one session, the threads shared out between
    them, which is the other way the server can use the same cores.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_padding()
    tokenizer.enable_truncation(max_length=256)
    session = ort.InferenceSession(
        encoder.read_bytes(), session_options(max(1, threads // parallel)), providers=["CPUExecutionProvider"]
    )
    rates = {}
    for batch in batches:
        feeds = []
        for start in range(0, len(texts) - batch + 1, batch):
            encodings = tokenizer.encode_batch(texts[start : start + batch])
            feeds.append(
                {
                    "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                    "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
                }
            )
        if parallel == 1:
            rotation = itertools.cycle(feeds)
            rates[batch] = _rate(lambda rotation=rotation: session.run(None, next(rotation)), batch, seconds)
        else:
            rates[batch] = _parallel_rate(session, feeds, batch, parallel, seconds)
    return rates


def _parallel_rate(
    session: ort.InferenceSession, feeds: list[dict[str, Any]], batch: int, parallel: int, seconds: float
) -> float:
    """Items/s of ``parallel`` threads each running batches on the same session (ORT releases the GIL)."""
    session.run(None, feeds[0])
    done = [0] * parallel
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        rotation = itertools.cycle(feeds[index:] + feeds[:index])
        while time.perf_counter() < stop:
            session.run(None, next(rotation))
            done[index] += batch

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def sequence_lengths(tokenizer_json: Path, texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    return [len(tokenizer.encode(t).ids) for t in texts]
