"""One writer for the benchmarks' sections of docs/benchmarks.md: the text between two marker comments."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(begin: str, end: str, block: str, *, heading: str = "", doc: Path = DOC) -> None:
    """Replace the section from ``begin`` to ``end`` with ``block`` (which holds both markers), or append it (under
    ``heading`` when given) the first time. ``doc``: another page than docs/benchmarks.md."""
    text = doc.read_text()
    if begin in text:
        text = text.split(begin, 1)[0] + block + text.split(begin, 1)[1].split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + block + "\n"
    doc.write_text(text)
    print(f"wrote docs/{doc.name}")
