"""Charts drawn on the server as SVG: the lineage graph, the confusion-matrix heat map, histograms and bars.

Server-rendered, so they need no JavaScript, weigh a few kilobytes and show in a screenshot at once. Every figure
has role="img" (the lineage graph, whose boxes are links, role="group") and a <title> (axe-core's svg-img-alt
rule); text in it is escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


@dataclass(frozen=True)
class Node:
    key: str
    label: str
    kind: str  #: dataset, job, version, compression (a compression job) or variant: the column and the colour
    href: str | None = None
    detail: str = ""


_COLUMNS = ("dataset", "job", "version", "compression", "variant")
_FILL = {"dataset": "#e8f1fb", "job": "#fdf3e1", "version": "#e6f4ea", "compression": "#fdf3e1", "variant": "#f1e8fb"}
_STROKE = {"dataset": "#1f5fa8", "job": "#9a6400", "version": "#1e7a3a", "compression": "#9a6400", "variant": "#6a3aa8"}


def _svg(width: int, height: int, title: str, body: str, role: str = "img") -> Markup:
    # Every text and attribute value in ``body`` was escaped where it was put in (html.escape), so it is markup.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="{role}" aria-label="{escape(title)}" class="drawing"><title>{escape(title)}</title>{body}</svg>'
    )


def lineage(nodes: Sequence[Node], edges: Sequence[tuple[str, str]], title: str) -> Markup:
    """A layered graph, left to right: datasets, training jobs, versions, compression jobs, compressed variants."""
    box_w, box_h, gap_x, gap_y, pad = 170, 38, 60, 14, 10
    columns: dict[str, list[Node]] = {kind: [] for kind in _COLUMNS}
    for node in nodes:
        columns.setdefault(node.kind, []).append(node)
    used = [kind for kind in _COLUMNS if columns[kind]]
    where: dict[str, tuple[int, int]] = {}
    tallest = max((len(columns[k]) for k in used), default=1)
    for col, kind in enumerate(used):
        for row, node in enumerate(columns[kind]):
            where[node.key] = (pad + col * (box_w + gap_x), pad + row * (box_h + gap_y))
    width = pad * 2 + max(1, len(used)) * (box_w + gap_x) - gap_x
    height = pad * 2 + tallest * (box_h + gap_y) - gap_y
    parts = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>'
    ]
    for source, target in edges:
        if source not in where or target not in where:
            continue
        (x1, y1), (x2, y2) = where[source], where[target]
        parts.append(
            f'<line x1="{x1 + box_w}" y1="{y1 + box_h // 2}" x2="{x2}" y2="{y2 + box_h // 2}" stroke="#555" '
            'stroke-width="1.2" marker-end="url(#arrow)"/>'
        )
    for node in nodes:
        x, y = where[node.key]
        label = escape(node.label if len(node.label) <= 24 else node.label[:23] + "…")
        detail = escape(node.detail[:28])
        box = (
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="5" fill="{_FILL.get(node.kind, "#fff")}" '
            f'stroke="{_STROKE.get(node.kind, "#333")}"/>'
            f'<text x="{x + 8}" y="{y + 16}" {_FONT} fill="#111">{label}</text>'
            f'<text x="{x + 8}" y="{y + 31}" {_FONT} fill="#333">{detail}</text>'
        )
        if node.href:
            box = f'<a href="{escape(node.href)}">{box}</a>'
        parts.append(box)
    # A group, not an image: its boxes are links (an image's children are not reachable: axe nested-interactive).
    return _svg(width, height, title, "".join(parts), role="group")


def _cell_colour(share: float) -> tuple[str, str]:
    """White to dark blue by the share of the row's largest count; the text colour that stays readable."""
    share = min(1.0, max(0.0, share))
    r, g, b = (int(255 - (255 - c) * share) for c in (23, 63, 135))
    return f"rgb({r},{g},{b})", "#fff" if share > 0.5 else "#111"


def heatmap(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> Markup:
    """The confusion matrix: rows are the true class, columns the predicted one, each cell with its count."""
    k = len(classes)
    cell = 34 if k <= 12 else 22
    left, top = 90, 40
    width, height = left + k * cell + 10, top + k * cell + 30
    peak = max((max(row) for row in matrix if row), default=0) or 1
    parts = [
        f'<text x="{left + k * cell // 2}" y="14" text-anchor="middle" {_FONT} fill="#111">predicted</text>',
        f'<text x="12" y="{top + k * cell // 2}" {_FONT} fill="#111" '
        f'transform="rotate(-90 12 {top + k * cell // 2})" text-anchor="middle">true</text>',
    ]
    for j, name in enumerate(classes):
        short = escape(str(name)[:6])
        parts.append(
            f'<text x="{left + j * cell + cell // 2}" y="{top - 6}" text-anchor="middle" {_FONT} fill="#111">'
            f"{short}</text>"
        )
        parts.append(
            f'<text x="{left - 6}" y="{top + j * cell + cell // 2 + 4}" text-anchor="end" {_FONT} fill="#111">'
            f"{short}</text>"
        )
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            fill, ink = _cell_colour(count / peak)
            x, y = left + j * cell, top + i * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#ccc">'
                f"<title>true {escape(str(classes[i]))}, predicted {escape(str(classes[j]))}: {count}</title></rect>"
                f'<text x="{x + cell // 2}" y="{y + cell // 2 + 4}" text-anchor="middle" {_FONT} fill="{ink}">'
                f"{count}</text>"
            )
    return _svg(width, height, title, "".join(parts))


def histogram(counts: Sequence[int], edges: Sequence[float], title: str) -> Markup:
    """Bars of a feature's histogram (the dataset profile's ten bins), with its range underneath."""
    width, height, base = 240, 90, 70
    bins = max(1, len(counts))
    bar = (width - 20) / bins
    peak = max(counts, default=0) or 1
    parts = []
    for i, count in enumerate(counts):
        h = round(55 * count / peak, 1)
        low = edges[i] if i < len(edges) else 0.0
        high = edges[i + 1] if i + 1 < len(edges) else low
        parts.append(
            f'<rect x="{10 + i * bar:.1f}" y="{base - h}" width="{max(1.0, bar - 2):.1f}" height="{h}" fill="#3a6fb0">'
            f"<title>{low:.3g} to {high:.3g}: {count}</title></rect>"
        )
    if edges:
        parts.append(f'<text x="10" y="{base + 15}" {_FONT} fill="#111">{edges[0]:.3g}</text>')
        right = f'<text x="{width - 10}" y="{base + 15}" text-anchor="end" {_FONT} fill="#111">{edges[-1]:.3g}</text>'
        parts.append(right)
    return _svg(width, height, title, "".join(parts))


def bars(values: Sequence[tuple[str, float]], title: str, unit: str = "") -> Markup:
    """Horizontal bars with their labels and values (class balance, per-class precision or recall)."""
    row, left, span = 18, 110, 200
    height = 10 + row * max(1, len(values))
    peak = max((v for _, v in values), default=0) or 1
    parts = []
    for i, (label, value) in enumerate(values):
        y = 5 + i * row
        w = round(span * value / peak, 1)
        parts.append(
            f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" {_FONT} fill="#111">{escape(str(label)[:16])}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{w}" height="{row - 5}" fill="#3a6fb0"/>'
            f'<text x="{left + w + 4}" y="{y + 12}" {_FONT} fill="#111">{value:g}{escape(unit)}</text>'
        )
    return _svg(left + span + 60, height, title, "".join(parts))
