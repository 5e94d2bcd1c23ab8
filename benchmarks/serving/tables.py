"""Plain-text and markdown tables, and the README block between its markers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

MARK_BEGIN, MARK_END = "<!-- results:begin -->", "<!-- results:end -->"


def text_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An aligned plain-text table (first column left, the others right)."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_marked(text: str, block: str) -> str:
    """``text`` with everything between :data:`MARK_BEGIN` and :data:`MARK_END` replaced by ``block``."""
    start, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {MARK_BEGIN} … {MARK_END} are missing or out of order")
    return f"{text[: start + len(MARK_BEGIN)]}\n{block.strip()}\n{text[end:]}"


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds for a table (``-`` when unknown)."""
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.1f}"
