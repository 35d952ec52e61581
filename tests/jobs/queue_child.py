"""The child of the queue tests' job kind: notes that it ran (one line per run, appended to the file the test
names), prints one progress line, and exits 0. Run as ``python -m queue_child --job DIR --dataset - --threads N``."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    job_dir = sys.argv[sys.argv.index("--job") + 1]
    sys.stdin.buffer.read()
    with open(os.environ["STRATUS_TEST_JOB_RUNS"], "a") as runs:
        runs.write(os.path.basename(job_dir) + "\n")
    print(json.dumps({"event": "log", "message": "ran"}), flush=True)


if __name__ == "__main__":
    main()
