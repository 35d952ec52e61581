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

import csv
import hashlib
import importlib
import inspect
import io
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from types import ModuleType

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


# The module-family task: a labelled text-classification dataset from the same docstrings, for the text
# trainers' benchmarks and tests (benchmarks/sequence.py records rnn, transformer and text_classifier on it).

#: The families: six of the standard library's largest packages by distinct docstrings (CPython 3.11), each a
#: top-level module with its submodules (benchmarks/finetune.py measures fine_tune on the same six).
#: turtle needs tkinter, which every full CPython build has.
FAMILIES = ("asyncio", "email", "logging", "unittest", "xml", "turtle")
#: Docstrings shorter than this many words say too little to classify ("Return self.").
_MIN_WORDS = 6


def _family_modules(family: str) -> list[ModuleType]:
    import pkgutil

    modules = [importlib.import_module(family)]
    for info in pkgutil.walk_packages(getattr(modules[0], "__path__", []), family + "."):
        if any(part.startswith("_") or part in ("test", "tests") for part in info.name.split(".")[1:]):
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # noqa: S112 - a submodule this platform cannot import (e.g. Windows-only) is skipped
            continue
    return modules


def _family_docstrings(family: str) -> list[str]:
    """The docstrings of a family's modules, and of the functions, classes and methods each defines (not those
    it imports from elsewhere), whitespace collapsed."""
    texts: list[str] = []
    for module in _family_modules(family):
        name = getattr(module, "__name__", "")
        texts.append(inspect.getdoc(module) or "")
        for _, member in sorted(vars(module).items()):
            if getattr(member, "__module__", None) != name:
                continue
            if inspect.isfunction(member) or inspect.isclass(member):
                texts.append(inspect.getdoc(member) or "")
            if inspect.isclass(member):
                texts.extend(inspect.getdoc(f) or "" for _, f in sorted(vars(member).items()) if inspect.isfunction(f))
    return [" ".join(t.split()) for t in texts]


@dataclass(frozen=True)
class LabelledTexts:
    """Texts and their class indices into ``classes`` (sorted, as a training job orders classes)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def csv(self, text_column: str = "text", target: str = "family") -> bytes:
        """The task as a CSV to upload: a free-text column and the target (the class names)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([text_column, target])
        writer.writerows((text, self.classes[label]) for text, label in zip(self.texts, self.labels, strict=True))
        return buffer.getvalue().encode()

    def split(self, test_split: float = 0.25, seed: int = 0) -> tuple[list[str], list[int], list[str], list[int]]:
        """(train texts, train labels, test texts, test labels): the very split a training job makes of ``csv()``
        with the same test_split and seed (stratified, training/worker.py's split), so a model trained outside a
        job is compared on the job's held-out rows."""
        import numpy as np

        from stratus.training.worker import split

        rows = np.arange(len(self.texts))
        train, test, _, _ = split(rows, np.asarray(self.labels), test_split, seed, True)
        return (
            [self.texts[i] for i in train],
            [self.labels[i] for i in train],
            [self.texts[i] for i in test],
            [self.labels[i] for i in test],
        )


@cache
def module_family_task(per_family: int | None = None) -> LabelledTexts:
    """The docstring classification task: each docstring of ``FAMILIES`` (at least 6 words) labelled with its
    family, sorted by text (the rows and order of benchmarks/finetune.py's docstring_task). A text found in two
    families (an inherited or copied docstring) is dropped, as is a repeat. ``per_family`` keeps the first N of
    each family (for small tests). Train with any text trainer on ``csv()`` (a job holds out its test split), or
    use ``split()`` for the same rows outside a job."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found: dict[str, set[str]] = {}
        order: list[str] = []
        for family in FAMILIES:
            texts = [t for t in _family_docstrings(family) if len(t.split()) >= _MIN_WORDS]
            if not texts:
                raise RuntimeError(f"the standard library's {family} has no docstrings here (is it installed?)")
            for text in texts:
                if text not in found:
                    found[text] = set()
                    order.append(text)
                found[text].add(family)
    kept: dict[str, list[str]] = {family: [] for family in FAMILIES}
    for text in sorted(order):  # sorted by text, as benchmarks/finetune.py orders them
        if len(found[text]) == 1:
            kept[next(iter(found[text]))].append(text)
    classes = tuple(sorted(FAMILIES))
    chosen = {t for f in FAMILIES for t in kept[f][:per_family]}
    pairs = [(t, classes.index(next(iter(found[t])))) for t in sorted(chosen)]
    return LabelledTexts(tuple(t for t, _ in pairs), tuple(label for _, label in pairs), classes)


__all__ = ["FAMILIES", "LabelledTexts", "module_family_task", "sentences", "split"]
