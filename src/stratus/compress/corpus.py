"""A text corpus built offline, for evaluating and distilling embedding models.

Nothing is downloaded: the sentences come from the docstrings of Python's own standard library, which is
on every machine that runs Stratus. They are English prose about many topics (files, dates, networking,
numbers, text), which is what a general sentence-embedding model is meant for. Sentences are split into
a training part and a held-out part by a hash of their text, so the split never depends on order.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import warnings
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

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _docstrings() -> list[str]:
    # Touching every attribute of a module can trip its deprecation warnings; reading docs is harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _collect()


def _collect() -> list[str]:
    texts: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module missing from a minimal Python build is simply skipped
            continue
        texts.append(inspect.getdoc(module) or "")
        for _, member in sorted(vars(module).items()):
            if inspect.isfunction(member) or inspect.isclass(member):
                texts.append(inspect.getdoc(member) or "")
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
