"""A job child that runs until it is killed (bounded by a minute): what the cancel test stops."""

from __future__ import annotations

import json
import sys
import time

if __name__ == "__main__":
    print(json.dumps({"event": "log", "message": "started"}), flush=True)
    sys.stdin.buffer.read()
    time.sleep(60)
