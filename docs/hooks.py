"""MkDocs hook: the pages that are made from the code, at every build, so that they cannot drift.

A page asks for a generated part with a marker on a line of its own; ``on_page_markdown``
replaces it:

- ``<!-- generated: knobs -->``: the configuration knobs, from the structured configs of
  ``bench/config.py`` (``BenchConfig`` and the dataclasses it holds: ``timing.*``, ``backend.*``,
  ``tiling.*``, ``reduction.*``, ...) and each token-reduction method's typed parameters;
- ``<!-- generated: schema -->``: the record schema, from ``bench/results/records.py``
  (``Record``, ``PointConfig``, ``StageStats``);
- ``<!-- generated: registries -->``: what ``fastvlm-bench list`` prints (the function behind
  it, ``bench.models.command.listing`` and ``render_text``), with tables made from the same data.

Per field: its name (the dotted key for a knob), its type as written in the source, its default
and its comment. Most fields are documented by comments, not docstrings, so the comments are
read from the source (``ast`` for the fields, ``tokenize`` for the comments): the block of
comment lines right above a field, and the comment at the end of its line. A comment block that
begins with another field's name (``# tokens (from ReductionConf): ...`` in a subclass) belongs
to that field. Field names come from ``dataclasses.fields``, so a field without a comment is
still listed. The few knobs of ``bench/config.py`` that have no comment get a line from
:data:`KNOB_NOTES` until they have one in the source (a comment there wins).

Run ``mkdocs build --strict`` (``.ci/run``, ``tests/test_docs.py``); an unknown marker is an error.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import io
import logging
import re
import sys
import tokenize
from pathlib import Path
from typing import Dict, List, Optional, Tuple

log = logging.getLogger("mkdocs.hooks.fastvlm_bench")
ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- generated: ([a-z_-]+) -->$", re.M)

#: Knobs of bench/config.py that have no comment in the source yet (a comment there replaces the
#: line here). Text from the manual's own description of each knob.
KNOB_NOTES = {
    "BenchConfig.batch_size": "images per iteration",
    "BenchConfig.extra_work_matmuls": "with `extra_work_stage`: N, the number of 256x256 fp32 matmuls (0: none)",
    "BenchConfig.projector": "`mlp2x_gelu` (LLaVA-1.5's, default) or `linear`",
    "BenchConfig.count_flops": "count FLOPs per stage on fake tensors (an untimed pass; fills the `*_gflops` columns)",
    "BenchConfig.results_dir": "records and tables go to `<results_dir>/<name>/`",
    "BenchConfig.reports_dir": "reports go to `<reports_dir>/<name>/`",
    "TimingConf.confidence": "confidence level of the median's interval (0.95 = 95 %)",
    "TimingConf.target_stage": "the stage whose interval the stopping rule watches (`ttft`; `e2e` or `decode` "
                               "with `decode_tokens`; `vision_latency` on an encoder-only point)",
    "ReductionConf.name": "the method: `none` or a registered one (the per-method tables below)",
}


def on_config(config):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the checkout's bench, not another installed copy
    return config


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(m: re.Match) -> str:
        name = m.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_uri}: unknown generated part {name!r} (known: {', '.join(GENERATORS)})")
        log.info("generating %s for %s", name, page.file.src_uri)
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


# ---- reading a dataclass's fields and their comments from its source --------------------------

def _comments(source: str) -> Dict[int, str]:
    """Line number (1-based) -> the comment text on that line (``#:``/``#`` and one space dropped)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = re.sub(r"^#:?\s?", "", tok.string).strip()
    return out


def _own_docs(cls: type) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The comments of the fields ``cls`` itself defines (not its bases), and each field's
    annotation and default as written: ({name: comment}, {name: "annotation\\0default"})."""
    try:
        source, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}, {}
    # dedent so the class parses on its own
    indent = len(source[0]) - len(source[0].lstrip())
    text = "".join(line[indent:] if line[:indent].strip() == "" else line for line in source)
    tree = ast.parse(text)
    node = tree.body[0]
    comments = _comments(text)
    lines = text.splitlines()
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    docs: Dict[str, List[str]] = {}
    written: Dict[str, str] = {}
    fields_at: Dict[int, str] = {}  # first line of a field's statement
    ends_at: Dict[int, str] = {}  # its last line (where its end-of-line comment is)
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            fields_at[stmt.lineno] = stmt.target.id
            ends_at[stmt.end_lineno or stmt.lineno] = stmt.target.id
            ann = ast.get_source_segment(text, stmt.annotation) or ""
            default = ast.get_source_segment(text, stmt.value) if stmt.value is not None else ""
            written[stmt.target.id] = f"{ann}\0{default}"

    def owner(comment: str, fallback: Optional[str]) -> Optional[str]:
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\b\s*[(:]", comment)
        if m and m.group(1) in names and m.group(1) != fallback:
            return m.group(1)
        return fallback

    def strip_name(comment: str, who: Optional[str], nxt: Optional[str]) -> str:
        """``tokens (from ReductionConf): > 0 ...`` -> ``> 0 ...`` when it documents ``tokens``."""
        if who and who != nxt:
            return re.sub(r"^" + re.escape(who) + r"\b\s*(\([^)]*\))?\s*:\s*", "", comment)
        return comment

    # blocks of whole-line comments: they document the field on the next line, or the field they name
    block: List[str] = []
    for i, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#") and i in comments:
            block.append(comments[i])
            continue
        if block:
            nxt = fields_at.get(i)
            who = owner(block[0], nxt)
            if who:
                docs.setdefault(who, []).append(strip_name(" ".join(block), who, nxt))
            block = []
        if i in ends_at and i in comments:  # the comment at the end of a field's line
            name = ends_at[i]
            who = owner(comments[i], name) or name
            docs.setdefault(who, []).append(strip_name(comments[i], who, name))
    if block:  # comment lines after the last field
        who = owner(block[0], None)
        if who:
            docs.setdefault(who, []).append(strip_name(" ".join(block), who, None))
    return {k: " ".join(v) for k, v in docs.items()}, written


def field_table(cls: type) -> List[dict]:
    """One row per field of ``cls`` (``dataclasses.fields`` order): name, type, default, comment."""
    docs: Dict[str, str] = {}
    written: Dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a subclass's own text wins over its base's
        if dataclasses.is_dataclass(base):
            d, w = _own_docs(base)
            for k, v in d.items():  # redefined here: its own text; else a note added to the base's
                docs[k] = v if k not in docs or k in w else f"{docs[k]}. In `{base.__name__}`: {v}"
            written.update(w)
    rows = []
    for f in dataclasses.fields(cls):
        ann, _, default_src = written.get(f.name, "\0").partition("\0")
        rows.append({"name": f.name, "type": ann or getattr(f.type, "__name__", str(f.type)),
                     "default": _default(f, default_src), "doc": docs.get(f.name, ""), "field": f})
    return rows


def _default(f: dataclasses.Field, source: str) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
        if isinstance(v, enum.Enum):
            return f"`{v.value}`"
        if v == "???":  # omegaconf.MISSING
            return "required"
        return f"`{v!r}`" if not isinstance(v, str) else f'`"{v}"`'
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        made = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(made):
            return f"`{type(made).__name__}()`"
        return f"`{made!r}`"
    return "required"


def _md(text: str) -> str:
    """A comment or docstring as Markdown: reST roles and ````literals```` as code spans, and
    ``<``/``>`` outside code spans escaped (``<results_dir>/<name>/`` is text, not a tag)."""
    text = re.sub(r":(?:mod|func|class|data|meth|attr):`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ").strip() or "–"


def _enum_values(tp) -> Optional[str]:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(f"`{m.value}`" for m in tp)
    return None


# ---- the knobs ---------------------------------------------------------------------------------

def _resolved_types(cls: type) -> Dict[str, object]:
    import typing

    try:
        return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    except Exception:  # a forward reference the module cannot resolve: fall back to the text
        return {}


def _knob_rows(cls: type, prefix: str, nested: List[Tuple[str, type]]) -> List[str]:
    hints = _resolved_types(cls)
    out = []
    for row in field_table(cls):
        key = prefix + row["name"]
        doc = row["doc"] or KNOB_NOTES.get(f"{cls.__name__}.{row['name']}", "")
        tp = hints.get(row["name"])
        typ = f"`{row['type']}`"
        values = _enum_values(tp)
        if values:
            typ += f": {values}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            nested.append((key, tp))
            anchor = key.replace(".", "-").replace("_", "-")
            doc = (doc + "; " if doc else "") + f"the [`{key}.*` table](#{anchor})"
        out.append(f"| `{key}` | {_cell(typ)} | {_cell(row['default'])} | {_cell(doc)} |")
    return out


def knobs() -> str:
    from bench import config

    head = "| key | type | default | what |\n| --- | --- | --- | --- |"
    parts = []
    queue: List[Tuple[str, type]] = [("", config.BenchConfig)]
    seen = set()
    while queue:
        prefix, cls = queue.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        nested: List[Tuple[str, type]] = []
        rows = _knob_rows(cls, f"{prefix}." if prefix else "", nested)
        title = f"`{prefix}.*`: `{cls.__name__}`" if prefix else "Top-level knobs: `BenchConfig`"
        anchor = prefix.replace(".", "-").replace("_", "-") if prefix else "top-level"
        doc = inspect.getdoc(cls) if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
        parts.append(f"## {title} {{#{anchor}}}\n\n" + (f"{doc}\n\n" if doc else "") + head + "\n" + "\n".join(rows))
        queue.extend(nested)
    parts.append(_reduction_methods())
    return "\n\n".join(parts) + "\n"


def _reduction_methods() -> str:
    """Each registered token-reduction method's own parameters (``reduction=NAME reduction.KEY=V``)."""
    from bench.models.reduction import REDUCTIONS

    out = ["## Token-reduction methods' parameters {#reduction-methods}",
           "`reduction=NAME` selects a method; its dataclass (`Conf`, deriving from `ReductionConf`) gives "
           "the `reduction.*` keys it takes, each with its default:"]
    for name in REDUCTIONS.names():
        m = REDUCTIONS.get(name)
        conf = m.Conf
        rows = [f"| `reduction.{r['name']}` | `{_cell(r['type'])}` | {_cell(r['default'])} | "
                f"{_cell(r['doc'] or KNOB_NOTES.get(f'ReductionConf.' + r['name'], ''))} |"
                for r in field_table(conf) if r["name"] != "name"]
        out.append(f"### `reduction={name}` (`{conf.__name__}`, `{conf.__module__}`)\n\n"
                   "| key | type | default | what |\n| --- | --- | --- | --- |\n" + "\n".join(rows))
    return "\n\n".join(out)


# ---- the record schema -------------------------------------------------------------------------

def schema() -> str:
    from bench.results import records

    parts = [f"Schema version: **{records.SCHEMA_VERSION}** (`bench.results.records.SCHEMA_VERSION`)."]
    for cls, anchor, intro in (
            (records.Record, "record", "The JSON file of a point (`records/<point_id>.json`) is one `Record`."),
            (records.PointConfig, "pointconfig",
             "`Record.config`: the resolved knobs of the point. Fields in `POINT_KEYS` make the point id."),
            (records.StageStats, "stagestats", "`Record.stages[<stage>]`: one timed stage, in milliseconds.")):
        doc = inspect.getdoc(cls) or ""
        in_id = set(records.POINT_KEYS) if cls is records.PointConfig else set()
        head = "| field | type | default | in the id | what |\n| --- | --- | --- | --- | --- |" if in_id \
            else "| field | type | default | what |\n| --- | --- | --- | --- |"
        rows = []
        for r in field_table(cls):
            idcol = f" {'yes' if r['name'] in in_id else 'no'} |" if in_id else ""
            rows.append(f"| `{r['name']}` | `{_cell(r['type'])}` | {_cell(r['default'])} |{idcol} {_cell(r['doc'])} |")
        parts.append(f"## `{cls.__name__}` {{#{anchor}}}\n\n{doc}\n\n{intro}\n\n{head}\n" + "\n".join(rows))
    stages = ", ".join(f"`{s}`" for s in records.STAGES)
    decode = ", ".join(f"`{s}`" for s in records.DECODE_STAGES)
    parts.append(f"Timed stages, in pipeline order (`STAGES`): {stages}; with `decode_tokens` "
                 f"(`DECODE_STAGES`): {decode}.")
    return "\n\n".join(parts) + "\n"


# ---- the registries ----------------------------------------------------------------------------

def registries() -> str:
    from bench.models.command import listing, render_text

    data = listing()
    text = render_text(data)
    out = ["The output of `fastvlm-bench list` on the machine that built this site (the `backends` "
           "lines say whether each runtime is installed *there*):",
           "```text\n" + text + "\n```"]
    sections = (
        ("encoders", "Encoders (`encoder=NAME`)", ("name", "kind", "channels", "stride", "paper_resolutions", "description")),
        ("llms", "LLMs (`llm=NAME`)", ("name", "hidden_size", "layers", "parameters", "description")),
        ("tilings", "Tiling modes (`tiling=NAME`)", ("name", "grids", "max_tiles", "description")),
        ("reductions", "Token-reduction methods (`reduction=NAME`)", ("name", "parameters", "where", "description")),
        ("backends", "Backends (`backend=NAME`)", ("name", "stages", "installed", "description")),
        ("hf_systems", "Shipped transformers systems (`hf=NAME`)", ("name", "model_type", "class", "parameters", "source")),
        ("sweeps", "Named sweeps (`sweep=NAME`)", ("name", "records_in", "points", "params", "note")),
        ("claims", "Claims files (`fastvlm-bench claims --claims FILE`)", ("file", "claims", "points", "description")),
    )
    for key, title, cols in sections:
        rows = data.get(key) or []
        out.append(f"## {title}\n\n| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols))
        for item in rows:
            out[-1] += "\n| " + " | ".join(_cell(_fmt(c, item.get(c))) for c in cols) + " |"
    return "\n\n".join(out) + "\n"


def _fmt(col: str, v) -> str:
    if v is None:
        return ""
    if col == "parameters" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v / 1e9:.2f} B"
    if isinstance(v, dict):
        return ", ".join(f"`{k}={w}`" for k, w in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    if col == "name":
        return f"`{v}`"
    return str(v).replace("``", "`")


GENERATORS = {"knobs": knobs, "schema": schema, "registries": registries}
