"""Tiny personalization data: a project's own vocabulary (code names for its services) that the base MiniLM
cannot know. Anchors name a service by its code name, positives describe it in plain words with other words
than the anchor's, so only a model that learnt the code names can match them; held-out pairs combine a code
name and a phrasing the model saw, but never together."""

from __future__ import annotations

import csv
import io
import itertools

CODES = {
    "zorblat": "the payment service",
    "quexon": "the login page",
    "mirvel": "the search index",
    "tandor": "the email sender",
    "plivo": "the photo uploader",
    "brask": "the invoice generator",
    "fennic": "the mobile app",
    "gorlab": "the nightly backup",
    "hembra": "the chat widget",
    "jostal": "the video player",
    "kovrin": "the shopping cart",
    "lumbar": "the map tiles",
}
ANCHORS = [
    "{c} is down again",
    "why is {c} so slow today",
    "please restart {c}",
    "{c} keeps throwing errors",
    "who is on call for {c}",
    "{c} needs more memory",
]
POSITIVES = [
    "an outage of {m}",
    "{m} answers slowly",
    "how to reboot {m}",
    "error messages from {m}",
    "the engineers responsible for {m}",
    "memory limits of {m}",
]
#: The job's tiny training configuration: a few steps at a high rate are enough for twelve code names.
PARAMS = {"steps": 6, "lr": 1e-4, "batch_size": 16, "max_length": 16}


def csv_bytes(rows: list[list[str]], header: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def pairs_csv() -> bytes:
    rows = [
        [a.format(c=code), p.format(m=meaning)]
        for (code, meaning), (a, p) in itertools.product(CODES.items(), zip(ANCHORS, POSITIVES, strict=True))
    ]
    return csv_bytes(rows, ["anchor", "positive"])
