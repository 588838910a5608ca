"""The one table renderer: aligned plain text for terminals, Markdown for reports, CI summaries
and PR comments. Every table the project prints or writes goes through these two functions.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence


def _cells(headers: Sequence[str], rows: Sequence[Sequence[Any]]):
    return [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[Sequence[str]] = None) -> str:
    """A fixed-width text table; ``align`` holds 'l' or 'r' per column (default: all 'l')."""
    cells = _cells(headers, rows)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = list(align or "l" * len(headers))

    def fmt(r):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[Sequence[str]] = None) -> str:
    """A GitHub-flavoured Markdown table; cells have ``|`` escaped and newlines flattened."""
    align = list(align or "l" * len(headers))
    esc = lambda c: c.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    cells = _cells(headers, rows)
    lines = ["| " + " | ".join(esc(h) for h in cells[0]) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in cells[1:]]
    return "\n".join(lines)
