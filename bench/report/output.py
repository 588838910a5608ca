"""The report's writer: every table as CSV, and ``index.html`` and ``report.md`` from the
Jinja2 templates in ``templates/`` (PNGs embedded in the HTML as base64, so it is one file).
"""
from __future__ import annotations

import base64
import datetime as _dt
from pathlib import Path
from typing import List

from ..analysis.reference import PAPER_DEVICE
from ..results.io import atomic_write_text
from .frames import Section, _formatted, to_markdown

def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _write(out_dir: Path, sweep: str, results_dir: Path, accuracy_files, sections: List[Section],
           warnings: List[str], x: str, benchmarks) -> Path:
    """Write tables/*.csv, ``index.html`` and ``report.md`` (templates in ``templates/``)."""
    import jinja2

    views, n_table = [], 0
    for s in sections:
        figs = []
        for png, caption in s.figures:
            rel = png.relative_to(out_dir).as_posix()
            figs.append({"png": rel, "svg": Path(rel).with_suffix(".svg").as_posix(), "caption": caption,
                         "data": base64.b64encode(png.read_bytes()).decode("ascii")})
        tables = []
        for caption, table in s.tables:
            n_table += 1
            name = f"{n_table:02d}_{_slug(caption)[:60]}.csv"
            atomic_write_text(out_dir / "tables" / name, table.to_csv(index=False))
            tables.append({"caption": caption, "file": name, "markdown": to_markdown(table),
                           "html": _formatted(table).to_html(index=False, escape=True, border=0) if len(table) else ""})
        views.append({"title": s.title, "slug": _slug(s.title), "text": s.text, "figures": figs, "tables": tables})
    context = dict(sweep=sweep, results_dir=str(results_dir), x=x, benchmarks=", ".join(benchmarks),
                   accuracy_files=", ".join(map(str, accuracy_files)), now=_dt.datetime.now().isoformat(timespec="seconds"),
                   paper_device=PAPER_DEVICE, warnings=warnings, sections=views)
    loader = jinja2.FileSystemLoader(str(Path(__file__).parent / "templates"))
    for name, escape in (("index.html", True), ("report.md", False)):
        env = jinja2.Environment(loader=loader, autoescape=escape, trim_blocks=True, lstrip_blocks=True,
                                 keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
        text = env.get_template(f"report.{name.split('.')[1]}.j2").render(**context)
        atomic_write_text(out_dir / name, text)
    return out_dir / "index.html"
