"""A text corpus built offline, for evaluating and distilling embedding models.

Nothing is downloaded: the sentences come from the docstrings of Python's own standard library, which is
on every machine that runs Stratus. They are English prose about many topics (files, dates, networking,
numbers, text), which is what a general sentence-embedding model is meant for. Sentences are split into
a training part and a held-out part by a hash of their text, so the split never depends on order.

The core (the module, class and function docstrings of ``MODULES``) comes first, then the rest of the
standard library's prose (method docstrings, other modules). The extra text more than doubles what a
distilled student trains on, and since it comes after the core, the first held-out sentences (which
evaluations use) are the core's whatever the extra adds.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
import warnings
from collections.abc import Iterable
from functools import cache

#: Standard-library modules with plenty of prose in their docstrings.
MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email",
    "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html", "http.client", "http.cookies", "http.server", "imaplib", "inspect",
    "ipaddress", "itertools", "json", "locale", "logging", "lzma", "mailbox", "mimetypes", "multiprocessing",
    "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pdb", "pickle", "pkgutil", "platform",
    "plistlib", "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics",
    "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "trace", "traceback", "turtle", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings",
    "wave", "weakref", "webbrowser", "xml.dom.minidom", "zipfile", "zoneinfo",
)  # fmt: skip

#: Standard-library modules never imported for their docstrings: importing them opens a browser, prints,
#: writes caches, or needs a display or a terminal; or they are test and packaging internals.
SKIPPED = frozenset(
    {
        "antigravity", "this", "idlelib", "tkinter", "turtledemo", "lib2to3", "test", "ensurepip", "venv",
        "pydoc_data", "distutils", "readline", "curses",
    }
)  # fmt: skip

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _docstrings() -> list[str]:
    # Importing a module, or touching its attributes, can trip deprecation warnings; reading docs is harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _collect(MODULES, members=True, methods=False) + _extra()


def _extra() -> list[str]:
    others = sorted(
        name
        for name in sys.stdlib_module_names
        if not name.startswith("_") and name not in SKIPPED and name not in MODULES
    )
    return _collect(MODULES, members=False, methods=True) + _collect(others, members=True, methods=True)


def _collect(names: Iterable[str], *, members: bool, methods: bool) -> list[str]:
    texts: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError):  # a module missing from this build (or this platform) is simply skipped
            continue
        if members:
            texts.append(inspect.getdoc(module) or "")
        for _, member in sorted(vars(module).items()):
            if members and (inspect.isfunction(member) or inspect.isclass(member)):
                texts.append(inspect.getdoc(member) or "")
            if methods and inspect.isclass(member):
                texts.extend(inspect.getdoc(f) or "" for _, f in sorted(vars(member).items()) if inspect.isfunction(f))
    return texts


def _clean(sentence: str) -> str | None:
    text = " ".join(sentence.split())
    words = _WORD.findall(text)
    # Prose only: 6 to 40 words, mostly letters, no code, no doctest lines, no tables.
    if not 6 <= len(words) <= 40 or len(text.split()) < 6 or len(words) < 0.6 * len(text.split()):
        return None
    if any(marker in text for marker in (">>>", "::", "{", "}", "<", "==", "->", "__", "(self")):
        return None
    return text


@cache
def sentences() -> tuple[str, ...]:
    seen: set[str] = set()
    result: list[str] = []
    for doc in _docstrings():
        for paragraph in doc.split("\n\n"):
            for sentence in _SENTENCE_END.split(paragraph):
                text = _clean(sentence)
                if text is not None and text not in seen:
                    seen.add(text)
                    result.append(text)
    return tuple(result)


def _held_out(text: str) -> bool:
    return hashlib.sha256(text.encode()).digest()[0] < 52  # about one sentence in five


def split(limit_train: int | None = None, limit_held_out: int | None = None) -> tuple[list[str], list[str]]:
    """(training sentences, held-out sentences), each in a stable order."""
    train = [s for s in sentences() if not _held_out(s)]
    held_out = [s for s in sentences() if _held_out(s)]
    return train[:limit_train], held_out[:limit_held_out]


__all__ = ["sentences", "split"]
