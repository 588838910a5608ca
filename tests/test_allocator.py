"""The measuring process's allocator (issue 33), through the real CLI: errors, records, the
child process that measures a point under another allocator, compare's flag, point order."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.config import Allocator
from bench.measure import allocator as A
from conftest import FAST, run_cli

# serial (tests/conftest.py) only the order run, which compares a point measured first and after a
# large LLM (a neighbour's work would distort it); the others check records, errors and compare's
# flags, not times.


def _installed(name: str) -> str:
    try:
        A.find_library(name)
        return ""
    except A.AllocatorError as exc:
        return str(exc)


NO_TCMALLOC = _installed("tcmalloc")


def _records(folder):
    return [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_the_knob_and_the_module_name_the_same_allocators():
    assert tuple(m.value for m in Allocator) == A.ALLOCATORS
    from bench.config import BenchConfig

    assert str(BenchConfig().allocator) == A.DEFAULT


def test_an_unknown_allocator_is_one_line_and_exit_2(tmp_path):
    p = run_cli([*FAST, "encoder=tiny_vit", f"results_dir={tmp_path}", "allocator=ptmalloc3"], cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-3000:]
    line = _one_line(p.stderr)
    assert line == ("fastvlm-bench: error: unknown allocator 'ptmalloc3'; valid: glibc, glibc_held, tcmalloc, "
                    "jemalloc"), line
    assert not any(tmp_path.iterdir())


def test_a_missing_preloaded_allocator_is_one_line_and_exit_2(tmp_path):
    """Only the folders of FASTVLM_BENCH_ALLOCATOR_DIRS are searched when it is set (the real lookup):
    an empty folder has no tcmalloc, and the run stops before anything is made."""
    empty = tmp_path / "no-libs"
    empty.mkdir()
    p = run_cli([*FAST, "encoder=tiny_vit", f"results_dir={tmp_path / 'r'}", "allocator=tcmalloc"], cwd=tmp_path,
                env={A.DIRS_ENV: str(empty)})
    assert p.returncode == 2, p.stderr[-3000:]
    line = _one_line(p.stderr)
    assert line.startswith("fastvlm-bench: error: allocator=tcmalloc: no libtcmalloc.so") and str(empty) in line
    assert "apt-get install libtcmalloc-minimal4" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(bool(NO_TCMALLOC), reason=f"tcmalloc is not installed ({NO_TCMALLOC})")
def test_records_say_which_allocator_and_a_sweep_measures_each_under_its_own(tmp_path):
    """One multirun over glibc, glibc_held and tcmalloc: the driver runs under the default
    (glibc_held) and measures the others in a process started under each. First with tcmalloc
    hidden (skipped, with the reason), then found: the same command measures it."""
    empty = tmp_path / "no-libs"
    empty.mkdir()
    args = ["-m", *FAST, "llm=none", "encoder=tiny_vit", f"results_dir={tmp_path}", "name=alloc",
            "allocator=glibc,glibc_held,tcmalloc"]
    p = run_cli(args, cwd=tmp_path, env={A.DIRS_ENV: str(empty)})
    assert p.returncode == 0, p.stderr[-3000:]
    recs = {r["config"]["allocator"]: r for r in _records(tmp_path / "alloc")}
    assert sorted(recs) == ["glibc", "glibc_held", "tcmalloc"]
    assert recs["tcmalloc"]["status"] == "skipped" and "libtcmalloc-minimal4" in recs["tcmalloc"]["message"]
    assert len({r["config"]["allocator"] for r in recs.values()}) == 3
    p = run_cli(args, cwd=tmp_path)  # the library found now: measured; the others resumed
    assert p.returncode == 0, p.stderr[-3000:]
    recs = {r["config"]["allocator"]: r for r in _records(tmp_path / "alloc")}
    for name, rec in recs.items():
        assert rec["status"] == "ok", rec["message"]
        assert rec["env"]["allocator"] == name  # the process that measured it was under it
    assert recs["glibc"]["env"]["allocator_env"] == {}
    assert recs["glibc_held"]["env"]["allocator_env"] == A.HELD_ENV
    lib = recs["tcmalloc"]["env"]["allocator_library"]
    assert "libtcmalloc" in lib and recs["tcmalloc"]["env"]["allocator_env"] == {"LD_PRELOAD": lib}
    assert "libc.so" in recs["glibc"]["env"]["allocator_library"]
    df = pd.read_csv(tmp_path / "alloc" / "results.csv")
    for col in ("allocator", "allocator_env", "allocator_library", "thp", "openmp_runtime", "openmp_env",
                "cpu_affinity", "cpu_governor"):
        assert col in df.columns, col
    assert json.loads(df.set_index("allocator").loc["glibc_held", "allocator_env"]) == A.HELD_ENV
    assert df["cpu_affinity"].notna().all() and df["openmp_runtime"].str.contains("omp").all()

    # compare pairs the two and flags the different allocator as a different stack
    paths = {json.loads(f.read_text())["config"]["allocator"]: f for f in (tmp_path / "alloc" / "records").glob("*.json")}
    held, tc = paths["glibc_held"], paths["tcmalloc"]
    out = tmp_path / "cmp.json"
    p = run_cli(["compare", str(held), str(tc), "--json", str(out), "--metrics", "vision_latency"], cwd=tmp_path)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    res = json.loads(out.read_text())["comparison"]
    assert res["matched"] == 1
    assert "allocator differs: base glibc_held vs candidate tcmalloc" in res["incomparable"], res["incomparable"]
    p = run_cli(["compare", str(held), str(tc), "--strict"], cwd=tmp_path)
    assert p.returncode == 2 and "allocator" in p.stderr, p.stderr[-3000:]

    # gate: rows from several allocators are flagged (--strict refuses); one selected is not
    gate = tmp_path / "gate.yaml"
    gate.write_text("target: tiny_vit\nselect: {llm: none}\ncheck_visual_tokens: true\n")
    p = run_cli(["gate", str(tmp_path / "alloc"), "--config", str(gate), "--strict"], cwd=tmp_path)
    assert p.returncode == 2 and "3 allocators (glibc, glibc_held, tcmalloc)" in _one_line(p.stderr), p.stderr
    p = run_cli(["gate", str(tmp_path / "alloc"), "--config", str(gate)], cwd=tmp_path)
    assert "warning: the gated rows were measured under 3 allocators" in p.stderr, p.stderr[-3000:]
    gate.write_text("target: tiny_vit\nselect: {llm: none, allocator: tcmalloc}\ncheck_visual_tokens: true\n")
    p = run_cli(["gate", str(tmp_path / "alloc"), "--config", str(gate)], cwd=tmp_path)
    assert p.returncode == 0 and "allocators" not in p.stderr, p.stdout + p.stderr


def test_ids_of_records_made_before_the_knob_do_not_change():
    from bench.results.records import PointConfig

    old = PointConfig(encoder="fastvithd", resolution=224, llm="qwen2_0.5b", dtype="fp32", device="cpu", threads=2)
    assert old.allocator == "glibc" and old.point_id() == "eb59f3a2d3b0"  # tests/test_default_sweep.py's id
    held = PointConfig(encoder="fastvithd", resolution=224, llm="qwen2_0.5b", dtype="fp32", device="cpu", threads=2,
                       allocator="glibc_held")
    assert held.point_id() != old.point_id()


def _order_run(tmp_path):
    """Order does not matter (issue 33), under the default allocator. One process measures, in
    this order: the encoder-only point first (name=first), the same encoder with Qwen2-0.5B (0.5 B
    parameters built and freed), then both again (name=after: the same ids, in another folder).
    The encoder-only point measured first and after the large LLM, and the Qwen2 point's vision
    stage, agree within compare's noise floor for one run per side; one process, so the drift of a
    shared machine between the two is seconds, not minutes. Returns (verdict, ratios, why)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    args = ["-m", "sweep=none", "report=false", "count_flops=false", "measure_peak=false", "encoder=tiny_convnext",
            "resolution=512", "preprocess=false", "threads=1", f"results_dir={tmp_path}", "name=first,after",
            "llm=none,qwen2_0.5b", "timing.warmup=3", "timing.min_repeats=10", "timing.max_repeats=40",
            "timing.max_seconds=2"]
    p = run_cli(args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    order = [(r["sweep"], r["config"]["llm"], r["timestamp"]) for n in ("first", "after") for r in _records(tmp_path / n)]
    assert [o[:2] for o in sorted(order, key=lambda o: o[2])] == [("first", "none"), ("first", "qwen2_0.5b"),
                                                                  ("after", "none"), ("after", "qwen2_0.5b")], order
    out = tmp_path / "cmp.json"
    p = run_cli(["compare", str(tmp_path / "first"), str(tmp_path / "after"), "--metrics", "vision_latency",
                 "--json", str(out)], cwd=tmp_path)
    res = json.loads(out.read_text())["comparison"]
    assert res["matched"] == 2 and not res["incomparable"], res
    ratios = {c["label"]: round(c["ratio"], 3) for c in res["comparisons"]}
    for rec in _records(tmp_path / "first") + _records(tmp_path / "after"):
        assert rec["config"]["allocator"] == A.DEFAULT and rec["env"]["allocator"] == A.DEFAULT
    busy = max(len(r["disturbed_iterations"]) / r["stages"]["vision_latency"]["n"]
               for r in _records(tmp_path / "first") + _records(tmp_path / "after"))
    if (res["regressions"] or res["improvements"]) and busy > 0.25:
        # the records themselves say other processes took the CPUs for over a quarter of a point's
        # iterations (on a shared 2-core machine they then read 13-160 ms): no verdict on order
        return "busy", ratios, f"{busy:.0%} of a point's iterations disturbed (its probes)"
    return ("same" if p.returncode == 0 and res["regressions"] == 0 and res["improvements"] == 0 else "differ"), \
        ratios, ""


@pytest.mark.serial
@pytest.mark.benchmark
def test_a_point_measures_the_same_first_and_after_a_large_llm(tmp_path):
    """The order run above, once more in a fresh folder when the first disagrees: glibc as found
    reads 0.68 after/first every time (the effect this guards against), while a cold first point
    in a fresh process was seen once in five runs on a loaded host (17.7 -> 12.5 ms over its first
    12 iterations, no iteration disturbed: a second cause not yet pinned down, docs/cpu-allocator.md).

    A measurement of that open problem (issue 33), not a pass/fail check, so it is skipped unless
    FASTVLM_BENCH_BENCHMARK_TESTS=1: under the default allocator CI read after/first 0.79 and 0.83
    (encoder alone, both tries) and this machine, quiet, 1.04/0.77 then 1.08/1.18 (the Qwen2
    point's vision stage at 10 iterations, +-11-12 %): the remaining order effect and the noise of
    a 10-iteration point are both larger than compare's floor."""
    tries = []
    for k in range(2):
        verdict, ratios, why = _order_run(tmp_path / f"try{k}")
        tries.append((verdict, ratios, why))
        if verdict == "same":
            return
    if all(v == "busy" for v, _, _ in tries):
        pytest.skip(f"the machine was busy in both tries: {tries}")
    assert False, f"the point's time depends on what its process measured before: {tries}"
