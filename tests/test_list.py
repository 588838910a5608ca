"""`fastvlm-bench list` shows every registry a sweep draws from; `list --json` parses, and what
it says is what the registries, sweeps/sweep/ and bench/data/claims/ hold."""
import json

import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def listed():
    p = run_cli(["list", "--json"])
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def test_list_json_names_every_registry(listed):
    from bench.models import ENCODERS, LLMS, TILINGS
    from bench.models.backends import BACKENDS
    from bench.models.reduction import REDUCTIONS

    assert list(listed) == ["encoders", "llms", "tilings", "reductions", "backends", "hf_systems", "sweeps", "claims"]
    from bench.models.hf import shipped_names

    assert [h["name"] for h in listed["hf_systems"]] == shipped_names()
    for key, reg in (("encoders", ENCODERS), ("llms", LLMS), ("tilings", TILINGS), ("reductions", REDUCTIONS),
                     ("backends", BACKENDS)):
        assert [e["name"] for e in listed[key]] == reg.names(), key
    red = {r["name"]: r for r in listed["reductions"]}
    assert red["tome"]["parameters"] == {"tokens": 0, "r": 8, "prop_attn": True}  # ToMeConf's fields and defaults
    assert red["random"]["parameters"]["seed"] == 0 and red["tome"]["where"] == "vision_latency"
    be = {b["name"]: b for b in listed["backends"]}
    assert be["eager"]["stages"] == ["preprocess", "vision_latency", "projector", "prefill", "decode"]
    assert be["onnxruntime"]["stages"] == ["vision_latency", "projector", "prefill"]
    import onnxruntime  # noqa: F401  (the locked stack has it: the listing must say so)

    assert be["onnxruntime"]["installed"] and be["onnxruntime"]["versions"]["onnxruntime"] == onnxruntime.__version__


def test_list_json_counts_the_points_of_each_named_sweep(listed):
    sweeps = {s["name"]: s for s in listed["sweeps"]}
    assert set(sweeps) == {p.stem for p in (ROOT / "sweeps" / "sweep").glob("*.yaml")}
    assert sweeps["ci_baseline"]["points"] == 4 * 2 and sweeps["runtimes"]["points"] == 3 * 6 * 4
    assert sweeps["none"]["points"] == 1
    # a glob over a group of point files counts its files (sweeps/zoo_point/, sweeps/fidelity_point/)
    assert sweeps["hf_zoo"]["points"] == len(list((ROOT / "sweeps" / "zoo_point").glob("*.yaml")))
    assert sweeps["hf_fidelity"]["points"] == len(list((ROOT / "sweeps" / "fidelity_point").glob("*.yaml")))
    assert sweeps["paper_claims"]["points"] == next(c["points"] for c in listed["claims"]
                                                    if c["file"].endswith("fastvlm_paper.yaml"))
    from bench.analysis.claims import load_claims

    claims = {c["file"]: c for c in listed["claims"]}
    assert set(claims) == {f"bench/data/claims/{p.name}" for p in (ROOT / "bench" / "data" / "claims").glob("*.yaml")}
    paper = claims["bench/data/claims/fastvlm_paper.yaml"]
    assert paper["claims"] == len(load_claims(ROOT / "bench/data/claims/fastvlm_paper.yaml"))


def test_list_text_has_a_section_per_registry():
    p = run_cli(["list"])
    assert p.returncode == 0, p.stderr[-3000:]
    for head in ("encoders (", "llms (", "tilings (", "reductions (", "backends (", "hf systems (", "sweeps (",
                 "claims files ("):
        assert any(line.startswith(head) for line in p.stdout.splitlines()), head
    assert "tome" in p.stdout and "reduction.KEY=DEFAULT" in p.stdout and "ci_baseline" in p.stdout
