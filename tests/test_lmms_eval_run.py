"""A real, offline lmms-eval run of the ``fastvlm_bench`` plugin, imported and joined with a
sweep -- and proof that Hydra's command-line overrides still parse next to lmms-eval (the
antlr4 runtime conflict settled by scripts/install.sh).

lmms-eval is a test dependency (scripts/install.sh installs it): if it is missing these tests
FAIL on purpose rather than skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

TASK = "tinyvqa_bench"
LIMIT = 3
MAX_NEW_TOKENS = 4


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp / "hf_home"),
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    return env


def _run(cmd, tmp: Path, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def test_lmms_eval_installed_with_hydra_antlr():
    """lmms-eval must be importable (no skip) and antlr must be the 4.9 runtime Hydra needs."""
    import lmms_eval  # noqa: F401  -- a missing lmms-eval fails here
    from lmms_eval.models import list_available_models

    assert metadata.version("lmms_eval") == "0.7.3"
    assert metadata.version("antlr4-python3-runtime").startswith("4.9."), \
        "antlr4-python3-runtime must stay 4.9.x for hydra-core; run scripts/install.sh"
    assert "fastvlm_bench" in list_available_models(), (
        "lmms-eval does not see the fastvlm_bench plugin: the entry point in group 'lmms_eval.models' must be "
        "'bench.accuracy.lmms_plugin:lmms_eval_manifest' (lmms-eval calls a callable payload), then reinstall the project")


@pytest.fixture(scope="module")
def sweep_results(tmp_path_factory):
    """A one-point sweep through the real Hydra command line (overrides parsed by antlr)."""
    tmp = tmp_path_factory.mktemp("sweep")
    _run([sys.executable, "-m", "bench", "sweep=none", "name=lmms_join", "encoder=tiny_vit", "llm=qwen2_tiny",
          "resolution=64", f"results_dir={tmp}", f"reports_dir={tmp / 'reports'}", "report=false",
          "timing.min_repeats=1", "timing.warmup=0", "device=cpu", "count_flops=false", "measure_peak=false"], tmp)
    csv = tmp / "lmms_join" / "results.csv"
    assert csv.is_file(), f"the sweep wrote no results table under {tmp}"
    import pandas as pd

    return pd.read_csv(csv)


def test_hydra_overrides_parse_next_to_lmms_eval(sweep_results):
    import lmms_eval  # noqa: F401  -- both live in this environment

    ok = sweep_results[sweep_results["status"] == "ok"]
    assert len(ok) == 1
    row = ok.iloc[0]
    assert (row["encoder"], int(row["resolution"]), row["llm"]) == ("tiny_vit", 64, "qwen2_tiny")
    assert row["visual_tokens"] == 16 and row["ttft_ms"] > 0


def _make_task(root: Path) -> Path:
    """A 4-image VQA dataset saved with ``datasets`` and a task YAML loading it from disk."""
    import datasets
    from PIL import Image

    colors = [("red", (230, 20, 20)), ("blue", (20, 20, 230)), ("green", (20, 200, 20)), ("red", (200, 0, 0))]
    ds = datasets.Dataset.from_dict(
        {"question_id": list(range(len(colors))), "question": ["What color is the picture?"] * len(colors),
         "answer": [c for c, _ in colors], "image": [Image.new("RGB", (80, 60), rgb) for _, rgb in colors]},
        features=datasets.Features({"question_id": datasets.Value("int64"), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string"), "image": datasets.Image()}))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(root / "data"))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(
        "def doc_to_visual(doc):\n    return [doc['image'].convert('RGB')]\n\n\n"
        "def doc_to_text(doc, lmms_eval_specific_kwargs=None):\n"
        "    kw = lmms_eval_specific_kwargs or {}\n"
        "    return f\"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}\"\n")
    (tasks / f"{TASK}.yaml").write_text(f"""dataset_path: {root / 'data'}
dataset_kwargs:
  load_from_disk: true
task: {TASK}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {MAX_NEW_TOKENS}
  until: ["."]
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: " Answer using a single word."
metadata:
  - version: 0.0
""")
    return tasks


def _make_checkpoint(path: Path) -> None:
    import torch

    from helpers_checkpoint import save_checkpoint, word_level_tokenizer
    from bench.models.vlm import build_vlm

    vlm, _ = build_vlm("tiny_vit", "qwen2_tiny", 64, device="cpu", dtype="fp32")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vlm.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    words = "what color is the picture red blue green answer using a single word".split()
    save_checkpoint(vlm, path, tokenizer=word_level_tokenizer(words))


def test_real_lmms_eval_run_import_and_join(tmp_path, sweep_results):
    from bench.accuracy.schema import read_accuracy
    from bench.analysis.join import join_efficiency_accuracy

    tasks = _make_task(tmp_path)
    ckpt = tmp_path / "ckpt"
    _make_checkpoint(ckpt)
    out = tmp_path / "lmms_out"
    model_args = f"encoder=tiny_vit,llm=qwen2_tiny,resolution=64,checkpoint={ckpt},device=cpu,dtype=fp32"
    _run([sys.executable, "-m", "lmms_eval", "--model", "fastvlm_bench", "--model_args", model_args,
          "--tasks", TASK, "--include_path", str(tasks), "--output_path", str(out), "--batch_size", "1",
          "--limit", str(LIMIT), "--log_samples"], tmp_path, timeout=400)

    results = sorted(out.rglob("*_results.json"))
    assert len(results) == 1, f"expected one results file under {out}, found {results}"
    data = json.loads(results[0].read_text())
    assert "exact_match,none" in data["results"][TASK]
    assert data["config"]["model"] == "fastvlm_bench" and data["config"]["model_args"] == model_args
    assert data["n-samples"][TASK]["effective"] == LIMIT

    timings = sorted(out.rglob("*_fastvlm_bench_timings.json"))
    assert len(timings) == 1, f"the plugin wrote no timings next to {results[0]}"
    t = json.loads(timings[0].read_text())
    assert t["model_args"]["encoder"] == "tiny_vit" and t["resolution"] == 64 and t["llm"] == "qwen2_tiny"
    assert t["overall"]["n"] == LIMIT and t["tasks"][TASK]["n"] == LIMIT
    assert t["visual_tokens"] == 16 and t["overall"]["visual_tokens"] == [16]
    for stage in ("vision_latency_ms", "projector_ms", "prefill_ms", "ttft_ms"):
        assert t["overall"]["stages"][stage]["median"] > 0
    assert t["overall"]["stages"]["ttft_ms"]["median"] >= t["overall"]["stages"]["prefill_ms"]["median"]
    assert all(s["new_tokens"] <= MAX_NEW_TOKENS for s in t["samples"])
    # TPOT from the real generate calls: every decode step marked, one per token after the first
    # (an answer ended by EOS also has the step that produced the EOS)
    for s in t["samples"]:
        assert len(s["itl_ms"]) == max(s["new_tokens"] - (0 if s["stopped"] == "eos" else 1), 0), s
        if s["itl_ms"]:
            assert s["tpot_ms"] == pytest.approx(sum(s["itl_ms"]) / len(s["itl_ms"]), rel=1e-4)
            assert s["ttst_ms"] > s["ttft_ms"] and s["e2e_ms"] >= s["ttst_ms"]
    if any(s["itl_ms"] for s in t["samples"]):
        assert t["overall"]["stages"]["tpot_ms"]["median"] > 0
        assert t["overall"]["stages"]["itl_ms"]["n"] == sum(len(s["itl_ms"]) for s in t["samples"])

    acc_csv = tmp_path / "accuracy.csv"
    proc = _run([sys.executable, "-m", "bench", "accuracy", "import", str(out), "--out", str(acc_csv)], tmp_path)
    assert "1 row(s) from 1 file(s)" in proc.stdout
    acc = read_accuracy(acc_csv)
    assert acc[["encoder", "resolution", "llm", "benchmark", "metric", "source"]].values.tolist() == [
        ["tiny_vit", 64, "qwen2_tiny", TASK, "exact_match", "lmms-eval"]]
    assert 0.0 <= acc.loc[0, "accuracy"] <= 100.0

    joined, unmatched_results, unmatched_acc = join_efficiency_accuracy(sweep_results, acc)
    assert len(joined) == 1 and unmatched_results.empty and unmatched_acc.empty
    assert joined.loc[0, "benchmark"] == TASK and joined.loc[0, "ttft_ms"] > 0


def test_failed_lmms_eval_run_is_loud(tmp_path):
    """lmms-eval exits 0 after a plugin error; ``accuracy run`` must not: it exits 1 with the
    plugin's own message, writes no accuracy table, and ``accuracy import`` of the empty output
    folder fails naming the folder."""
    out = tmp_path / "lmms_out"
    missing = tmp_path / "no_such_checkpoint"
    acc_csv = tmp_path / "accuracy.csv"
    cmd = [sys.executable, "-m", "bench", "accuracy", "run", "--out", str(acc_csv), "--",
           "--model", "fastvlm_bench", "--model_args",
           f"encoder=tiny_vit,llm=qwen2_tiny,resolution=64,checkpoint={missing},device=cpu",
           "--tasks", TASK, "--include_path", str(_make_task(tmp_path)), "--output_path", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fastvlm-bench accuracy: error: lmms-eval wrote no results file"), last
    assert f"tokenizer folder {missing} does not exist" in last, last
    assert not acc_csv.exists()

    out.mkdir(exist_ok=True)
    imp = subprocess.run([sys.executable, "-m", "bench", "accuracy", "import", str(out), "--out", str(acc_csv)],
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert imp.returncode == 1
    assert f"error: {out}: no lmms-eval results file" in imp.stderr and "Traceback" not in imp.stderr
    assert not acc_csv.exists()
