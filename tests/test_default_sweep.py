"""The default sweep (the README's first command) after issue 18: which points, and their ids.

The grid is composed by Hydra from ``sweeps/`` exactly as ``fastvlm-bench`` composes it, and every
point's id is computed by the code a sweep uses (``resolve_point``). The ids are pinned: they are
what the 12-point grid (224/336/448 px) gave before the 448 px points were dropped, computed
with that code, so a results folder of the old default sweep resumes its 8 points.
"""
from __future__ import annotations

import itertools

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.config import register_configs, sweeps_dir

#: (encoder, resolution) -> point id with qwen2_0.5b, fp32 on a CPU, 2 threads (this VM's cores),
#: as the 12-point default grid had them (computed before the change at commit 1129957).
OLD_IDS = {
    ("fastvithd", 224): "eb59f3a2d3b0", ("fastvithd", 336): "2684d78ca85d", ("fastvithd", 448): "a2dcb29d408d",
    ("fastvit", 224): "241211e9ac92", ("fastvit", 336): "6d5da5f6bb00", ("fastvit", 448): "d74a1e4a2f31",
    ("vit_l14", 224): "764531bde9af", ("vit_l14", 336): "3859720e744b", ("vit_l14", 448): "fbf4c44208e9",
    ("convnext_l", 224): "ebb918b299b5", ("convnext_l", 336): "fd5daf30ab63", ("convnext_l", 448): "1ffe066e216a",
}


def _default_points(extra=()):
    from bench.measure.scenario import resolve_point

    register_configs()
    fixed = ["threads=2", "device=cpu", *extra]
    with initialize_config_dir(str(sweeps_dir()), version_base=None):
        root = compose("config", overrides=fixed, return_hydra_config=True)
        params = OmegaConf.to_container(root.hydra.sweeper.params)
        keys = list(params)
        for combo in itertools.product(*[str(params[k]).split(",") for k in keys]):
            cfg = OmegaConf.to_object(compose("config", overrides=fixed + [f"{k}={v}" for k, v in zip(keys, combo)]))
            yield cfg, resolve_point(cfg)


def test_default_sweep_keeps_the_ids_of_the_points_that_remain():
    """Under allocator=glibc, the process state they were measured in (records made before the
    allocator knob are glibc); the default allocator, glibc_held, is another point (issue 33)."""
    points = list(_default_points(["allocator=glibc"]))
    assert {p.point_id() for _, p in _default_points()}.isdisjoint(OLD_IDS.values())
    got = {(p.encoder, p.resolution): p.point_id() for _, p in points}
    assert sorted(got) == sorted((e, r) for e in ("fastvithd", "fastvit", "vit_l14", "convnext_l") for r in (224, 336))
    assert {p.llm for _, p in points} == {"qwen2_0.5b"} and {p.dtype for _, p in points} == {"fp32"}
    assert got == {k: OLD_IDS[k] for k in got}
    # the stopping rule the first run uses (not part of the ids): +-5 % within the 20 s budget
    assert {(c.timing.target, c.timing.max_seconds, c.timing.target_stage) for c, _ in points} == {(0.05, 20.0, "ttft")}
