"""lmms-eval results JSON -> accuracy long format (shape taken from a real lmms-eval 0.7.3 run:
``<date>_results.json`` with ``results`` {task: {"metric,filter": value, "alias": ...}},
``config`` {model, model_args, ...}, ``date`` as ``YYYYmmdd_HHMMSS``)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import main as cli_main
from bench.accuracy.lmms_import import import_results, primary_metric
from bench.accuracy.schema import read_accuracy


def _task(metrics: dict, alias: str) -> dict:
    out = {"alias": alias}
    for name, value in metrics.items():
        out[f"{name},none"] = value
        out[f"{name}_stderr,none"] = 0.01
        out[f"{name}_stderr_clt,none"] = 0.01
        out[f"{name}_stderr_clustered,none"] = "N/A"
    return out


def write_results(folder, model, model_args, results: dict, date="20261125_060056"):
    """A results file as lmms-eval 0.7 lays it out (trimmed to the fields the importer reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "results": {task: _task(m, task) for task, m in results.items()},
        "group_subtasks": {task: [] for task in results},
        "configs": {task: {"task": task, "output_type": "generate_until"} for task in results},
        "versions": {task: "Yaml" for task in results},
        "n-shot": {task: 0 for task in results},
        "higher_is_better": {task: {k: True for k in m} for task, m in results.items()},
        "n-samples": {task: {"original": 10, "effective": 10} for task in results},
        "config": {"model": model, "model_args": model_args, "model_backend": "x", "batch_size": "1",
                   "device": None, "limit": None},
        "lmms_eval_version": "0.7.3", "date": date, "model_name": "", "model_name_sanitized": "",
    }
    path = folder / f"{date}_results.json"
    path.write_text(json.dumps(data))
    return path


PLUGIN_ARGS = "encoder=fastvithd,llm=qwen2_0.5b,resolution=1024,checkpoint=/ckpt,device=cuda,dtype=bf16"


def test_primary_metrics_and_scaling(tmp_path):
    write_results(tmp_path / "run1", "fastvlm_bench", PLUGIN_ARGS, {
        "gqa": {"exact_match": 0.612},
        "textvqa_val": {"exact_match": 0.5343, "submission": 1.0},
        "pope": {"pope_accuracy": 0.854, "pope_precision": 0.9, "pope_recall": 0.8, "pope_f1_score": 0.84,
                 "pope_yes_ratio": 0.45},
        "docvqa_val": {"anls": 0.701},
        "chartqa": {"relaxed_overall": 0.55, "relaxed_human_split": 0.4, "relaxed_augmented_split": 0.7},
        "mmmu_val": {"mmmu_acc": 0.33},
        "seedbench": {"seed_image": 0.66, "seed_video": 0.0, "seed_all": 0.5},
        "scienceqa_img": {"exact_match": 0.7},
        "mmvet": {"gpt_eval_score": 31.5},  # already percent
        "my_custom_task": {"accuracy": 0.25},
    })
    rep = import_results([tmp_path])
    assert rep.problems == []
    got = {r.benchmark: (r.metric, round(r.accuracy, 6)) for r in rep.rows.itertuples()}
    assert got == {"gqa": ("exact_match", 61.2), "textvqa": ("exact_match", 53.43), "pope": ("pope_accuracy", 85.4),
                   "docvqa": ("anls", 70.1), "chartqa": ("relaxed_overall", 55.0), "mmmu": ("mmmu_acc", 33.0),
                   "seedbench_img": ("seed_image", 66.0), "sqa": ("exact_match", 70.0),
                   "mmvet": ("gpt_eval_score", 31.5), "my_custom_task": ("accuracy", 25.0)}
    assert set(rep.rows["encoder"]) == {"fastvithd"} and set(rep.rows["llm"]) == {"qwen2_0.5b"}
    assert set(rep.rows["resolution"]) == {1024} and set(rep.rows["source"]) == {"lmms-eval"}
    assert rep.rows["origin"].str.endswith("_results.json").all()
    # known tasks use their declared scale; only the unknown one is guessed, and the import says so
    guessed = [n for n in rep.notes if "scale guessed" in n]
    assert len(guessed) == 1 and "my_custom_task" in guessed[0], rep.notes


def test_declared_scale_is_used_not_guessed():
    # a percent task with a small score stays a small percentage (the old guess made it 80 %)
    assert primary_metric("mmvet", {"gpt_eval_score,none": 0.8}) == ("mmvet", "gpt_eval_score", 0.8)
    # a fraction task cannot report more than 1: the declared scale is checked, not bent
    with pytest.raises(ValueError, match="not a fraction"):
        primary_metric("gqa", {"exact_match,none": 61.2})
    notes = []
    assert primary_metric("odd_task", {"score,none": 42.0}, notes)[2] == 42.0
    assert len(notes) == 1 and "scale guessed for task odd_task" in notes[0]


def test_ambiguous_and_non_percent_tasks_are_reported():
    with pytest.raises(ValueError, match="none of the expected metrics"):
        primary_metric("gqa", {"alias": "gqa", "bleu,none": 0.3})
    with pytest.raises(ValueError, match="not a percentage"):
        primary_metric("mme", {"mme_perception_score,none": 1500.0})
    with pytest.raises(ValueError, match="not a fraction or a percentage"):
        primary_metric("odd_task", {"score,none": 250.0})


def test_unreadable_files_reported_and_cli_exit_codes(tmp_path, capsys):
    good = write_results(tmp_path / "runs", "fastvlm_bench", PLUGIN_ARGS, {"gqa": {"exact_match": 0.5}})
    (tmp_path / "runs" / "20260101_000000_results.json").write_text("{not json")
    (tmp_path / "runs" / "other_results.json").write_text(json.dumps({"foo": 1}))
    write_results(tmp_path / "runs" / "llava", "llava", "pretrained=liuhaotian/llava-v1.5-7b",
                  {"gqa": {"exact_match": 0.62}}, date="20261125_070000")
    out = tmp_path / "acc.csv"
    # a path that holds no results at all (what a failed lmms-eval run leaves) fails the import
    rc = cli_main(["accuracy", "import", str(tmp_path / "runs"), str(tmp_path / "missing"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"error: {tmp_path / 'missing'}: no such file or folder" in err and not out.exists()
    rc = cli_main(["accuracy", "import", str(tmp_path / "runs"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    assert "20260101_000000_results.json: not valid JSON" in err
    assert "other_results.json: not an lmms-eval results file" in err
    assert "cannot tell the configuration of model llava" in err and "--mapping" in err
    df = read_accuracy(out)
    assert len(df) == 1 and df.loc[0, "origin"] == str(good)

    rc = cli_main(["accuracy", "import", str(tmp_path / "runs" / "20260101_000000_results.json"), "--out", str(out)])
    assert rc == 1
    assert "no lmms-eval results could be read" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["yaml", "csv"])
def test_mapping_file_keys_other_models(tmp_path, fmt, capsys):
    write_results(tmp_path / "llava7b", "llava", "pretrained=liuhaotian/llava-v1.5-7b,conv_template=vicuna_v1",
                  {"gqa": {"exact_match": 0.62}, "pope": {"pope_accuracy": 0.86, "pope_f1_score": 0.85}})
    write_results(tmp_path / "fastvlm" / "a", "llava_onevision", "pretrained=apple/FastVLM-0.5B",
                  {"textvqa_val": {"exact_match": 0.5}})
    if fmt == "yaml":
        mapping = tmp_path / "map.yaml"
        mapping.write_text(
            "- model: llava\n  model_args: '*llava-v1.5-7b*'\n  encoder: vit_l14\n  resolution: 336\n  llm: vicuna_7b\n"
            "- file: 'fastvlm/**'\n  encoder: fastvithd\n  resolution: 1024\n  llm: qwen2_0.5b\n")
    else:
        mapping = tmp_path / "map.csv"
        mapping.write_text("file,model,model_args,encoder,resolution,llm\n"
                           ",llava,*llava-v1.5-7b*,vit_l14,336,vicuna_7b\n"
                           "*/fastvlm/*,,,fastvithd,1024,qwen2_0.5b\n")
    out = tmp_path / "acc.csv"
    # an existing table: a paper row is kept, an older lmms-eval row for the same key is replaced
    pd.DataFrame([
        dict(encoder="vit_l14", resolution=336, llm="vicuna_7b", benchmark="gqa", metric="exact_match",
             accuracy=10.0, source="lmms-eval", origin="old.json"),
        dict(encoder="vit_l14", resolution=336, llm="vicuna_7b", benchmark="gqa", metric="paper",
             accuracy=62.0, source="paper-reported", origin="paper"),
    ]).to_csv(out, index=False)
    assert cli_main(["accuracy", "import", str(tmp_path), "--mapping", str(mapping), "--out", str(out)]) == 0
    df = read_accuracy(out)
    rows = {(r.encoder, r.resolution, r.llm, r.benchmark, r.source): r.accuracy for r in df.itertuples()}
    assert rows == {("vit_l14", 336, "vicuna_7b", "gqa", "lmms-eval"): pytest.approx(62.0),
                    ("vit_l14", 336, "vicuna_7b", "gqa", "paper-reported"): 62.0,
                    ("vit_l14", 336, "vicuna_7b", "pope", "lmms-eval"): pytest.approx(86.0),
                    ("fastvithd", 1024, "qwen2_0.5b", "textvqa", "lmms-eval"): pytest.approx(50.0)}


def test_newest_run_wins_and_bad_mapping(tmp_path, capsys):
    write_results(tmp_path / "a", "fastvlm_bench", PLUGIN_ARGS, {"gqa": {"exact_match": 0.40}}, date="20261101_000000")
    write_results(tmp_path / "b", "fastvlm_bench", PLUGIN_ARGS, {"gqa": {"exact_match": 0.45}}, date="20261102_000000")
    rep = import_results([tmp_path])
    assert rep.rows["accuracy"].tolist() == [pytest.approx(45.0)]
    assert len(rep.notes) == 1 and "superseded" in rep.notes[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- encoder: x\n  resolution: 1\n  llm: y\n")
    assert cli_main(["accuracy", "import", str(tmp_path), "--mapping", str(bad), "--dry-run"]) == 2
    assert "no match field" in capsys.readouterr().err
