"""``python -m stratus.samples``: build the samples into the shared cache unless they are there already.

`make install` runs it, so a first `stratus serve` only imports them. Prints the cache directory.
"""

from __future__ import annotations

import sys
import time

from stratus.samples import SampleBuildError, ensure_samples
from stratus.settings import Settings


def main() -> int:
    # The same resolution as the server's, so STRATUS_SAMPLE_CACHE_DIR is honoured here too.
    cache_dir = Settings().resolved_sample_cache_dir
    started = time.monotonic()
    try:
        manifest = ensure_samples(cache_dir)
    except SampleBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(m.name for m in manifest.models)
    print(f"sample models ({names}) ready in {cache_dir} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
