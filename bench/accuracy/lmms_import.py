"""Read lmms-eval results JSON files into the accuracy long format (``bench.accuracy.schema``).

lmms-eval 0.7 writes ``<output_path>/<model name>/<date>_results.json`` (the model-name
folder is empty for models without ``pretrained=``/``model=``... in model_args, such as our
``fastvlm_bench`` plugin)::

    {"results": {"<task>": {"alias": "<task>", "<metric>,<filter>": 0.61,
                            "<metric>_stderr,<filter>": 0.01, ...}, ...},
     "configs": {"<task>": {...}}, "n-samples": {...}, "higher_is_better": {...},
     "config": {"model": "fastvlm_bench", "model_args": "encoder=...,llm=...,resolution=...", ...},
     "date": ..., "lmms_eval_version": ...}

Each task gives one row: its *primary* metric (:data:`TASKS`: GQA/TextVQA/VQAv2/ScienceQA
``exact_match``, POPE ``pope_accuracy``, DocVQA ``anls``, ChartQA ``relaxed_overall``, MMMU
``mmmu_acc``, SEED-Bench ``seed_image``, ...; unknown tasks: the single numeric metric, or a
common accuracy name), filter ``none`` preferred, converted to percent with the scale the task
declares in :data:`TASKS` (lmms-eval reports most tasks as fractions, GPT-judged ones such as
MM-Vet in percent). For a task not in TASKS the scale is guessed from the value (0-1: a
fraction) and the import says so in a note.

Rows are keyed to (encoder, resolution, llm) from the ``fastvlm_bench`` plugin's model_args, or
from a mapping file (any model), whose first matching entry wins::

    # mapping.yaml -- every given match field must match (fnmatch patterns)
    - file: "runs/fastvlm_0.5b/**"          # the results file's path
      encoder: fastvithd
      resolution: 1024
      llm: qwen2_0.5b
    - model: llava_onevision                # config.model
      model_args: "*pretrained=apple/FastVLM-1.5B*"   # config.model_args
      encoder: fastvithd
      resolution: 1024
      llm: qwen2_1.5b

(a CSV with columns ``file, model, model_args, encoder, resolution, llm`` works too; empty
match cells match anything). Nothing is dropped silently: every file or task that could not
be used is returned as a problem.
"""
from __future__ import annotations

import csv
import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import pandas as pd

from .schema import ACCURACY_COLUMNS, FRACTION, PERCENT, normalize_accuracy, to_percent

SOURCE = "lmms-eval"
PathLike = Union[str, Path]


class Task(NamedTuple):
    benchmark: str  # canonical benchmark name in the long format
    metrics: Tuple[str, ...]  # primary metrics, in order of preference
    scale: str  # FRACTION or PERCENT: how lmms-eval reports the metric


#: lmms-eval tasks: task name(s) | canonical benchmark | primary metrics, in order of preference |
#: the scale lmms-eval reports them in. GPT-judged tasks (MM-Vet, LLaVA-Bench, MMBench,
#: MathVista) report percent; the others report fractions.
_TASK_TABLE = """
gqa                                         | gqa           | exact_match                  | fraction
textvqa textvqa_val                         | textvqa       | exact_match                  | fraction
textvqa_test                                | textvqa       | exact_match submission       | fraction
pope pope_full                              | pope          | pope_accuracy pope_f1_score  | fraction
pope_adv                                    | pope_adv      | pope_accuracy pope_f1_score  | fraction
pope_pop                                    | pope_pop      | pope_accuracy pope_f1_score  | fraction
pope_random                                 | pope_random   | pope_accuracy pope_f1_score  | fraction
docvqa docvqa_val docvqa_test               | docvqa        | anls                         | fraction
chartqa chartqa_lite                        | chartqa       | relaxed_overall              | fraction
mmmu mmmu_val                               | mmmu          | mmmu_acc                     | fraction
seedbench seedbench_lite                    | seedbench_img | seed_image seed_all          | fraction
vqav2 vqav2_val                             | vqav2         | exact_match                  | fraction
vqav2_test                                  | vqav2         | exact_match submission       | fraction
scienceqa scienceqa_img scienceqa_full      | sqa           | exact_match                  | fraction
mmvet                                       | mmvet         | gpt_eval_score               | percent
llava_in_the_wild                           | llava_bench_w | gpt_eval_llava_all           | percent
ai2d                                        | ai2d          | exact_match                  | fraction
ok_vqa_val2014                              | okvqa         | exact_match                  | fraction
vizwiz_vqa_val                              | vizwiz        | exact_match                  | fraction
realworldqa                                 | realworldqa   | exact_match                  | fraction
infovqa_val                                 | infovqa       | anls                         | fraction
ocrbench                                    | ocrbench      | ocrbench_accuracy            | fraction
mmbench_en_dev                              | mmbench_en    | gpt_eval_score               | percent
mmstar                                      | mmstar        | average                      | fraction
mathvista_testmini                          | mathvista     | gpt_eval_score               | percent
"""
TASKS: Dict[str, Task] = {
    task: Task(bench, tuple(metrics.split()), {"fraction": FRACTION, "percent": PERCENT}[scale])
    for tasks, bench, metrics, scale in (map(str.strip, line.split("|")) for line in _TASK_TABLE.strip().splitlines())
    for task in tasks.split()
}
#: metric names taken as "the accuracy" of a task not listed in TASKS (in this order)
GENERIC_PRIMARY = ("exact_match", "accuracy", "acc", "anls", "relaxed_overall", "score")
#: tasks whose scores are not percentages (cannot enter the long format)
NOT_PERCENT = {"mme": "MME scores are sums of per-subtask scores (0-2000), not a percentage"}
MAPPING_MATCH_FIELDS = ("file", "model", "model_args")
CONFIG_FIELDS = ("encoder", "resolution", "llm")


class LmmsResultsError(ValueError):
    """A file is not a readable lmms-eval results JSON."""


class MappingError(ValueError):
    """A mapping file is malformed."""


@dataclass
class ImportReport:
    """What an import produced: rows, notes and every problem met (never dropped silently)."""

    rows: pd.DataFrame
    files_read: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: Paths given that hold no results file at all: an evaluation that failed (lmms-eval logs
    #: its error and still exits 0) leaves exactly this, so the CLI treats it as an error.
    empty_paths: List[str] = field(default_factory=list)


# ---- model_args and mapping ------------------------------------------------------------------
def parse_model_args(model_args: Any) -> Dict[str, str]:
    """``"a=1,b=x"`` (lmms-eval's format; dict accepted) -> ``{"a": "1", "b": "x"}``."""
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    out: Dict[str, str] = {}
    depth, cur, parts = 0, "", []
    for ch in str(model_args or ""):
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        if "=" in p:
            k, v = p.split("=", 1)
            out[k.strip()] = v.strip()
    return out


@dataclass
class MappingEntry:
    match: Dict[str, str]
    encoder: str
    resolution: int
    llm: str

    def matches(self, path: Path, model: str, model_args: str) -> bool:
        values = {"file": path.as_posix(), "model": model or "", "model_args": model_args or ""}
        for key, pattern in self.match.items():
            v = values[key]
            if key == "file":
                if not (fnmatch.fnmatch(v, pattern) or fnmatch.fnmatch(v, "*/" + pattern.lstrip("/"))
                        or fnmatch.fnmatch(path.name, pattern)):
                    return False
            elif not fnmatch.fnmatchcase(v, pattern):
                return False
        return True


def load_mapping(path: PathLike) -> List[MappingEntry]:
    """Read a mapping file (YAML list / ``{mappings: [...]}`` or CSV); see the module doc."""
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"mapping file {path} does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            raw = list(csv.DictReader(fh))
    else:
        import yaml

        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise MappingError(f"{path}: invalid YAML ({exc})") from exc
        if isinstance(raw, dict):
            raw = raw.get("mappings", raw.get("mapping"))
    if not isinstance(raw, list):
        raise MappingError(f"{path}: expected a list of entries (or a CSV with columns "
                           f"{', '.join(MAPPING_MATCH_FIELDS + CONFIG_FIELDS)})")
    entries: List[MappingEntry] = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise MappingError(f"{path}: entry {i} is not a mapping of fields")
        item = {str(k).strip(): v for k, v in item.items() if k is not None}
        unknown = sorted(set(item) - set(MAPPING_MATCH_FIELDS) - set(CONFIG_FIELDS))
        if unknown:
            raise MappingError(f"{path}: entry {i} has unknown field(s) {unknown}; "
                               f"match fields: {MAPPING_MATCH_FIELDS}, targets: {CONFIG_FIELDS}")
        match = {k: str(item[k]).strip() for k in MAPPING_MATCH_FIELDS
                 if item.get(k) not in (None, "") and str(item[k]).strip()}
        if not match:
            raise MappingError(f"{path}: entry {i} has no match field (give file, model or model_args)")
        missing = [k for k in CONFIG_FIELDS if item.get(k) in (None, "")]
        if missing:
            raise MappingError(f"{path}: entry {i} lacks {missing}")
        try:
            res = int(str(item["resolution"]).strip())
        except ValueError:
            raise MappingError(f"{path}: entry {i}: resolution must be an integer, got {item['resolution']!r}") from None
        entries.append(MappingEntry(match, str(item["encoder"]).strip(), res, str(item["llm"]).strip()))
    return entries


# ---- files -----------------------------------------------------------------------------------
def is_results_name(name: str) -> bool:
    return name.endswith("_results.json") or name == "results.json"


def find_results_files(paths: Iterable[PathLike]) -> Tuple[List[Path], List[str]]:
    """Results files under ``paths`` (files as given; folders searched recursively), and one
    message for each path that holds none."""
    files: List[Path] = []
    empty: List[str] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*.json") if f.is_file() and is_results_name(f.name))
            if not found:
                empty.append(f"{p}: no lmms-eval results file (*_results.json) in this folder; if lmms-eval "
                             f"wrote here, its evaluation failed (it logs 'Error during evaluation' and exits 0)")
            files.extend(found)
        else:
            empty.append(f"{p}: no such file or folder")
    return list(dict.fromkeys(files)), empty


def read_results_file(path: PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise LmmsResultsError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    except ValueError as exc:
        raise LmmsResultsError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise LmmsResultsError(f"{path}: not an lmms-eval results file (no top-level 'results' object)")
    return data


def _numeric_metrics(task_results: dict) -> Dict[str, Dict[str, float]]:
    """``{metric: {filter: value}}`` for numeric, non-stderr entries."""
    out: Dict[str, Dict[str, float]] = {}
    for key, value in task_results.items():
        if key == "alias" or "," not in key:
            continue
        metric, flt = key.split(",", 1)
        if "_stderr" in metric or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        out.setdefault(metric, {})[flt] = float(value)
    return out


def primary_metric(task: str, task_results: dict, notes: Optional[List[str]] = None) -> Tuple[str, str, float]:
    """``(benchmark, metric, percent)`` for one task's results; raises ValueError if unclear.

    A task in :data:`TASKS` is converted with its declared scale. For any other task the
    scale is guessed (a value in [0, 1] is taken as a fraction) and a note saying so is
    appended to ``notes``.
    """
    base = task.lower()
    if base in NOT_PERCENT:
        raise ValueError(f"task {task}: {NOT_PERCENT[base]}; not imported")
    metrics = _numeric_metrics(task_results)
    if not metrics:
        raise ValueError(f"task {task}: no numeric metric in {sorted(task_results)[:8]}")
    known = TASKS.get(base)
    benchmark, preferred = (known.benchmark, known.metrics) if known else (base, GENERIC_PRIMARY)
    metric = next((m for m in preferred if m in metrics), None)
    if metric is None:
        if known is None and len(metrics) == 1:
            metric = next(iter(metrics))
        else:
            raise ValueError(f"task {task}: none of the expected metrics {list(preferred)} in results "
                             f"(has {sorted(metrics)}); add the task to bench.accuracy.lmms_import.TASKS")
    by_filter = metrics[metric]
    flt = "none" if "none" in by_filter else sorted(by_filter)[0]
    value = by_filter[flt]
    if known is not None:
        value = to_percent(value, known.scale, f"task {task}: {metric}")
    elif 0.0 <= value <= 1.0:
        value *= 100.0
        if notes is not None:
            notes.append(f"scale guessed for task {task}: {metric} = {by_filter[flt]} taken as a fraction "
                         "(add the task to bench.accuracy.lmms_import.TASKS to declare its scale)")
    elif not 0.0 <= value <= 100.0:
        raise ValueError(f"task {task}: {metric} = {by_filter[flt]} is not a fraction or a percentage")
    elif notes is not None:
        notes.append(f"scale guessed for task {task}: {metric} = {value} taken as a percentage "
                     "(add the task to bench.accuracy.lmms_import.TASKS to declare its scale)")
    name = metric if flt == "none" else f"{metric},{flt}"
    return benchmark, name, value


def config_key(path: Path, data: dict, mapping: Sequence[MappingEntry] = ()) -> Tuple[str, int, str]:
    """(encoder, resolution, llm) of a results file: mapping first, then fastvlm_bench model_args."""
    cfg = data.get("config") or {}
    model = str(cfg.get("model") or data.get("model_name") or "")
    raw_args = cfg.get("model_args") or ""
    args_str = raw_args if isinstance(raw_args, str) else ",".join(f"{k}={v}" for k, v in raw_args.items())
    for entry in mapping:
        if entry.matches(path, model, args_str):
            return entry.encoder, entry.resolution, entry.llm
    args = parse_model_args(raw_args)
    if all(args.get(k) for k in CONFIG_FIELDS):
        try:
            return args["encoder"], int(float(args["resolution"])), args["llm"]
        except ValueError:
            raise ValueError(f"{path}: model_args resolution={args['resolution']!r} is not an integer") from None
    hf = hf_config_key(model, args)
    if hf is not None:
        return hf
    raise ValueError(f"{path}: cannot tell the configuration of model {model or '?'} "
                     f"(model_args {args_str!r}): no encoder/llm/resolution in model_args and no "
                     f"--mapping entry matches")


#: lmms-eval's own model names for transformers VLMs (``--model NAME --model_args pretrained=...``)
#: whose results join ``hf=`` points of the same model.
LMMS_HF_MODELS = ("llava_onevision", "llava_hf", "qwen2_5_vl", "qwen2_vl", "idefics2", "gemma3", "internvl3",
                  "llava_onevision1_5", "phi3v", "mistral3_vl", "qwen3_vl")

#: The resolution of an accuracy row that holds for every image size of an ``hf=`` model: an
#: lmms-eval run feeds each benchmark's own images through the model's processor, so the score is
#: the model's, and :func:`bench.analysis.join.join_efficiency_accuracy` gives it to every
#: measured resolution of that model.
ANY_RESOLUTION = 0


def hf_config_key(model: str, args: Dict[str, str]) -> Optional[Tuple[str, int, str]]:
    """``("hf:NAME", 0, "hf:NAME")`` for an lmms-eval run of a transformers VLM: ``pretrained=``
    names a shipped system's Hub repo (``bench/data/hf/*/fastvlm_bench.json``), a local model
    folder (its name, as ``hf=PATH`` records it) or another Hub id (its last part)."""
    pretrained = args.get("pretrained")
    if model not in LMMS_HF_MODELS or not pretrained:
        return None
    from ..models.hf import shipped_meta

    for name, meta in shipped_meta().items():
        if str(meta.get("source", "")).split(" ")[0] == pretrained:
            return f"hf:{name}", ANY_RESOLUTION, f"hf:{name}"
    p = Path(pretrained).expanduser()
    name = p.resolve().name if p.is_dir() else pretrained.rstrip("/").split("/")[-1]
    return f"hf:{name}", ANY_RESOLUTION, f"hf:{name}"


def _timestamp(date: Any, path: Path) -> float:
    """Seconds for ordering runs: results ``date`` (epoch or lmms-eval's ``YYYYmmdd_HHMMSS``), else mtime."""
    import datetime as dt

    try:
        return float(date)
    except (TypeError, ValueError):
        pass
    try:
        return dt.datetime.strptime(str(date)[:15], "%Y%m%d_%H%M%S").timestamp()
    except ValueError:
        return path.stat().st_mtime


def import_results(paths: Iterable[PathLike], mapping: Union[None, PathLike, Sequence[MappingEntry]] = None
                   ) -> ImportReport:
    """Read every results file under ``paths`` into long-format rows (source ``lmms-eval``).

    When several files give the same (encoder, resolution, llm, benchmark), the most recent
    (results ``date``, else file time) wins and the others are listed in ``notes``.
    """
    entries: Sequence[MappingEntry] = (load_mapping(mapping) if isinstance(mapping, (str, Path))
                                       else list(mapping or []))
    files, empty = find_results_files(paths)
    problems: List[str] = []
    notes: List[str] = []
    rows: List[Dict[str, Any]] = []
    read: List[str] = []
    for f in files:
        try:
            data = read_results_file(f)
            enc, res, llm = config_key(f, data, entries)
        except (LmmsResultsError, ValueError) as exc:
            problems.append(str(exc))
            continue
        read.append(str(f))
        stamp = _timestamp(data.get("date"), f)
        if not data["results"]:
            problems.append(f"{f}: results are empty")
        for task, task_results in data["results"].items():
            if not isinstance(task_results, dict):
                problems.append(f"{f}: task {task}: results are not an object")
                continue
            try:
                bench, metric, value = primary_metric(task, task_results, notes)
            except ValueError as exc:
                problems.append(f"{f}: {exc}")
                continue
            rows.append(dict(encoder=enc, resolution=res, llm=llm, benchmark=bench, metric=metric,
                             accuracy=value, source=SOURCE, origin=str(f), _stamp=stamp, _task=task))
    df = pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS) + ["_stamp", "_task"])
    if not df.empty:
        df = df.sort_values("_stamp", kind="stable")
        key = ["encoder", "resolution", "llm", "benchmark"]
        dup = df.duplicated(key, keep="last")
        for _, r in df[dup].iterrows():
            notes.append(f"superseded by a newer result: {r['encoder']}@{r['resolution']}+{r['llm']} "
                         f"{r['benchmark']} ({r['_task']}) from {r['origin']}")
        df = df[~dup]
    df = normalize_accuracy(df.drop(columns=["_stamp", "_task"]), where="lmms-eval import")
    return ImportReport(rows=df, files_read=read, problems=problems, notes=list(dict.fromkeys(notes)),
                        empty_paths=empty)


def merge_into(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``existing`` with rows of the same (encoder, resolution, llm, benchmark, source) replaced by ``new``."""
    key = ["encoder", "resolution", "llm", "benchmark", "source"]
    existing = normalize_accuracy(existing, where="existing accuracy table")
    new = normalize_accuracy(new, where="imported rows")
    new_keys = set(map(tuple, new[key].astype(object).itertuples(index=False, name=None)))
    keep = [tuple(k) not in new_keys for k in existing[key].astype(object).itertuples(index=False, name=None)]
    merged = pd.concat([existing[keep], new], ignore_index=True)
    return merged.sort_values(["encoder", "resolution", "llm", "benchmark", "source"], kind="stable").reset_index(drop=True)
