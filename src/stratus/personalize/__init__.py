"""Per-project personalization of the bundled embedding model (docs/personalize.md): service.py (the job kind,
checks at submit, registration in the project), data.py (pairs or labelled texts, the held-out split),
request.py (the request), worker.py (the child that trains, exports and judges)."""
