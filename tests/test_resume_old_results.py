"""Issue 28: an old results folder resumes with nothing re-measured.

``tests/data/old_results/old`` holds real records written by the code before the point's
config was resolved into a plan (``bench.measure.plan``; made at commit bcddbf0 by
``python tests/test_resume_old_results.py OUT`` on that commit's tree). The same commands, run
again by today's CLI on a copy, must find every point already measured: the ids are computed
the same way, so nothing is timed again and no record file changes.

The hf= point's id carries the fingerprint of ``bench/data/hf/smolvlm_256m`` (``hf_fingerprint``):
an edit of that folder makes it a new point by design, and the fixture must then be made again.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "data" / "old_results"
COMMON = ["sweep=none", "report=false", "timing=quick", "count_flops=false", "measure_peak=false", "name=old"]
#: (the sweep's arguments, the points it has): composed and encoder-only points, a tiled point,
#: a token reduction, decoding, points skipped before they are built (not paper resolutions) and
#: an hf= point skipped by its memory check
COMMANDS = [
    (["-m", "encoder=tiny_vit,tiny_convnext", "llm=qwen2_tiny,none", "resolution=64"], 4),
    (["encoder=tiny_vit", "llm=qwen2_tiny", "resolution=128", "tiling=anyres_next", "tiling.tile=64"], 1),
    (["encoder=tiny_vit", "llm=qwen2_tiny", "resolution=96", "reduction=tome", "reduction.r=4"], 1),
    (["encoder=tiny_vit", "llm=qwen2_tiny", "resolution=64", "decode_tokens=3"], 1),
    (["-m", "encoder=tiny_vit", "llm=qwen2_tiny", "resolution=128", "tiling=none,anyres_max_9"], 2),
    (["-m", "encoder=tiny_vit", "llm=qwen2_tiny", "resolution=80,112", "paper_resolutions_only=true"], 2),
    (["hf=smolvlm_256m", "memory_headroom=1000"], 1),
]


def _records(folder: Path):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (folder / "old" / "records").iterdir()}


def test_an_old_results_folder_resumes_with_nothing_measured(tmp_path):
    from conftest import run_cli

    shutil.copytree(FIXTURE, tmp_path / "res")
    before = _records(tmp_path / "res")
    assert len(before) == sum(n for _, n in COMMANDS) and all(name.endswith(".json") for name in before)
    for args, n in COMMANDS:
        p = run_cli([*args, *COMMON, f"results_dir={tmp_path / 'res'}"], cwd=tmp_path)
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-3000:]
        assert out.count("already measured") == n, (args, out[-3000:])
    assert _records(tmp_path / "res") == before  # not one record rewritten


#: What a record says that follows from the point's plan, not from a timing: re-measured by
#: today's code, these are the old record's values.
PLANNED = ("config", "status", "visual_tokens", "visual_tokens_encoder", "llm_visual_tokens_per_layer",
           "reduction_overhead_in", "visual_tokens_measured", "encoder_channels", "llm_hidden", "tiling_grid",
           "tiles", "tile_tokens", "tiling_merged_grid", "params", "target_stage", "kv_cache_bytes",
           "decode_bytes_per_step", "pipeline", "settings", "hf_info")


def test_old_points_measured_again_give_the_same_planned_fields(tmp_path):
    """``force=true`` on the old folder: every point is measured again by today's code, and its
    record keeps the id and every field that follows from the plan (tokens, tiling, parameters,
    pipeline, KV cache, the skip reasons up to the machine's free memory)."""
    import json
    import re
    from dataclasses import asdict

    from bench.results.records import PointConfig
    from conftest import run_cli

    shutil.copytree(FIXTURE, tmp_path / "res")
    old = {p.name: json.loads(p.read_text()) for p in (FIXTURE / "old" / "records").iterdir()}
    for args, _ in COMMANDS:
        p = run_cli([*args, *COMMON, "force=true", f"results_dir={tmp_path / 'res'}"], cwd=tmp_path)
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    new = {p.name: json.loads(p.read_text()) for p in (tmp_path / "res" / "old" / "records").iterdir()}
    assert sorted(new) == sorted(old)
    free = re.compile(r"only [0-9.e+]+ GiB available")  # the machine's free memory, not the point's
    for name, rec in old.items():
        assert new[name]["timestamp"] != rec["timestamp"]  # measured again
        for key in PLANNED:
            if key == "config":  # as the schema reads it: a point key added since is at its default in both
                assert asdict(PointConfig(**new[name]["config"])) == asdict(PointConfig(**rec["config"])), name
                assert set(rec["config"]) <= set(new[name]["config"]), name
                continue
            assert new[name].get(key) == rec.get(key), (name, key)
        assert free.sub("", new[name]["message"]) == free.sub("", rec["message"]), name


if __name__ == "__main__":  # the fixture's maker: run on the old code's tree (see the docstring)
    import subprocess

    out = Path(sys.argv[1]).resolve()
    for args, _ in COMMANDS:
        subprocess.run([sys.executable, "-m", "bench", *args, *COMMON, f"results_dir={out}"], check=True)
    pytest  # noqa: B018  (imported for the test above)
