"""``fastvlm-bench list``: every registry a sweep draws from, as text or as JSON (``--json``).

Why one command for all of them: the Hydra groups (``encoder=``, ``llm=``, ``tiling=``,
``reduction=``, ``backend=``) are made from the registries, so the registries are the only true
list of what a point may name; a user should not have to read the README or provoke Hydra's
"could not find" error to learn them. Besides the registries it lists the named sweeps
(``sweep=NAME``, from ``sweeps/sweep/*.yaml``, with the number of points each launches) and the
claims files (``bench/data/claims/*.yaml``), which are data files read here as files.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

NAME = "list"
#: The claims files shipped with the package (``fastvlm-bench claims --claims FILE``).
CLAIMS_DIR = Path(__file__).resolve().parent.parent / "data" / "claims"
#: The claims file ``sweep=paper_claims`` takes its points from (bench.analysis.claims.CLAIMS_ENV).
CLAIMS_ENV = "FASTVLM_BENCH_CLAIMS"
SECTIONS = ("encoders", "llms", "tilings", "reductions", "backends", "hf_systems", "sweeps", "claims")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="encoders, LLMs, tilings, reductions, backends, named sweeps and claims files",
                              description="List every registry a sweep draws from: encoders, LLMs, tiling modes, "
                                          "token-reduction methods (with their parameters), backends (the stages "
                                          "each runs, whether its runtime is installed), the named sweeps (with "
                                          "their point counts) and the claims files.")
    p.add_argument("--json", action="store_true", help="print one JSON object (a key per registry) for scripts")
    p.set_defaults(func=run)
    return p


def _first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").strip().splitlines() if line.strip()), "")


def encoders() -> List[Dict[str, Any]]:
    from .encoders import ENCODERS

    return [{"name": n, "channels": s.channels, "kind": s.kind, "stride": s.stride,
             "paper_resolutions": list(s.paper_resolutions), "description": s.description}
            for n, s in ((n, ENCODERS.get(n)) for n in ENCODERS.names())]


def _meta_parameters(build) -> int:
    """Parameters of the module ``build()`` makes, counted on the meta device (nothing allocated)."""
    from .materialize import count_parameters, meta_parameters

    with meta_parameters():
        return count_parameters(build())


def llms() -> List[Dict[str, Any]]:
    from .llms import LLMS

    out = []
    for name in LLMS.names():
        s = LLMS.get(name)
        out.append({"name": name, "hidden_size": s.hidden_size, "layers": s.config["num_hidden_layers"],
                    "parameters": _meta_parameters(s.build), "description": s.description})
    return out


def tilings() -> List[Dict[str, Any]]:
    from .tiling import TILINGS

    return [{"name": n, "grids": len(t.grids), "max_tiles": t.max_tiles, "description": t.description}
            for n, t in ((n, TILINGS.get(n)) for n in TILINGS.names())]


def reductions() -> List[Dict[str, Any]]:
    """Each method with its typed parameters (``reduction.KEY=VALUE``) and their defaults."""
    from .reduction import NONE, REDUCTIONS

    out = []
    for name in REDUCTIONS.names():
        m = REDUCTIONS.get(name)
        params = {f.name: (f.default if f.default is not dataclasses.MISSING else None)
                  for f in dataclasses.fields(m.Conf) if f.name != "name"}
        what = "no reduction: every visual token reaches the LLM" if name == NONE \
            else _first_line(sys.modules[m.__module__].__doc__)
        out.append({"name": name, "parameters": params, "where": m.where, "needs": m.needs, "description": what})
    return out


def backends() -> List[Dict[str, Any]]:
    """Each backend with the stages it can run and whether its runtime imports here."""
    from .backends import BACKENDS

    out = []
    for name in BACKENDS.names():
        b = BACKENDS.get(name)()
        try:
            versions, installed, missing = b.versions(), True, None
        except ImportError as exc:
            versions, installed, missing = {}, False, exc.name
        out.append({"name": name, "stages": list(b.can_run), "installed": installed, "versions": versions,
                    "missing": missing, "description": _first_line(sys.modules[type(b).__module__].__doc__)})
    return out


def _claim_points(path: Path) -> int:
    """The distinct points (sides) of a claims file: what ``+claim_point=glob(*)`` sweeps, before
    the points this install cannot build are left out."""
    import yaml

    sides = set()
    for c in (yaml.safe_load(path.read_text()) or {}).get("claims") or []:
        for key in ("fast", "baseline"):
            side = c.get(key) or {}
            sides.add(json.dumps({k: side.get(k) for k in sorted(side)}, sort_keys=True, default=str))
    return len(sides)


def sweeps() -> List[Dict[str, Any]]:
    """``sweep=NAME`` for each ``sweeps/sweep/NAME.yaml``: its record folder name, the swept keys
    and the number of points it launches (the product of the comma-separated values; a
    ``glob(*)`` over the claim points counts the points of the claims file)."""
    import yaml

    from ..config import sweeps_dir

    out = []
    for path in sorted((sweeps_dir() / "sweep").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        params = ((data.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
        points, note = 1, None
        for key, value in params.items():
            text = str(value)
            if text.startswith("glob(") and key.lstrip("+") == "claim_point":
                claims = Path(os.environ.get(CLAIMS_ENV) or CLAIMS_DIR / "fastvlm_paper.yaml")
                points *= _claim_points(claims)
                note = f"one per point of {claims.name}"
            elif text.startswith("glob(") and (sweeps_dir() / key.lstrip("+")).is_dir():  # a group of points
                points *= len(list((sweeps_dir() / key.lstrip("+")).glob("*.yaml")))
                note = f"one per file of sweeps/{key.lstrip('+')}/"
            else:
                points *= len(text.split(","))
        out.append({"name": path.stem, "records_in": data.get("name"), "points": points,
                    "params": {k: str(v) for k, v in params.items()}, "note": note})
    return out


def hf_systems() -> List[Dict[str, Any]]:
    """The shipped transformers systems (``hf=NAME``, ``bench/data/hf/``): model type, class,
    parameters (counted on the meta device, nothing allocated) and the Hub repo their config
    values are from."""
    from .hf import check_config, resolve_source, shipped_names

    out = []
    for name in shipped_names():
        src = resolve_source(name)
        config, cls = check_config(src)
        out.append({"name": name, "model_type": config.model_type, "class": cls.__name__,
                    "parameters": _meta_parameters(lambda: cls._from_config(config)),
                    "source": src.meta().get("source", "?")})
    return out


def claims() -> List[Dict[str, Any]]:
    import yaml

    out = []
    for path in sorted(CLAIMS_DIR.glob("*.yaml")):
        entries = (yaml.safe_load(path.read_text()) or {}).get("claims") or []
        out.append({"file": str(path.relative_to(CLAIMS_DIR.parent.parent.parent)), "claims": len(entries),
                    "points": _claim_points(path), "description": _first_line(
                        next((line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#")), ""))})
    return out


def listing() -> Dict[str, List[Dict[str, Any]]]:
    """Every registry, by section name (:data:`SECTIONS`)."""
    return {"encoders": encoders(), "llms": llms(), "tilings": tilings(), "reductions": reductions(),
            "backends": backends(), "hf_systems": hf_systems(), "sweeps": sweeps(), "claims": claims()}


def render_text(data: Dict[str, List[Dict[str, Any]]]) -> str:
    lines = ["encoders (encoder=NAME: channels, stride/patch, paper resolutions):"]
    for e in data["encoders"]:
        res = ",".join(map(str, e["paper_resolutions"])) or "-"
        lines.append(f"  {e['name']:15s} {e['channels']:5d} ch  {e['kind']} /{e['stride']:<3d} {res:16s} {e['description']}")
    lines.append("llms (llm=NAME: hidden, layers, parameters; llm=none: encoder only):")
    for m in data["llms"]:
        lines.append(f"  {m['name']:15s} {m['hidden_size']:5d} hidden {m['layers']:3d} layers "
                     f"{m['parameters'] / 1e9:6.2f} B  {m['description']}")
    lines.append("tilings (tiling=NAME: grids of tiles, budget):")
    for t in data["tilings"]:
        budget = f"max {t['max_tiles']} tiles" if t["max_tiles"] else "-"
        lines.append(f"  {t['name']:15s} {t['grids']:3d} grids {budget:12s} {t['description']}")
    lines.append("reductions (reduction=NAME, parameters reduction.KEY=DEFAULT; where its work is timed):")
    for r in data["reductions"]:
        params = " ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "-"
        lines.append(f"  {r['name']:15s} {params:28s} {r['where']:15s} {r['description']}")
    lines.append("backends (backend=NAME: stages it can run; runtime installed here):")
    for b in data["backends"]:
        state = ("installed " + " ".join(f"{k} {v}" for k, v in b["versions"].items())).strip() if b["installed"] \
            else f"NOT installed (no {b['missing']}: bash scripts/install.sh)"
        lines.append(f"  {b['name']:15s} {','.join(b['stages']):45s} {state}")
    lines.append("hf systems (hf=NAME, or hf=PATH of your model folder: transformers' own class and processor):")
    for h in data["hf_systems"]:
        lines.append(f"  {h['name']:22s} {h['model_type']:16s} {h['parameters'] / 1e9:6.2f} B  {h['class']}  "
                     f"(config values: {h['source']})")
    lines.append("sweeps (sweep=NAME: points, swept keys):")
    for s in data["sweeps"]:
        keys = " ".join(f"{k}={v}" for k, v in s["params"].items()) or "(one point: the command line's)"
        note = f" ({s['note']})" if s["note"] else ""
        lines.append(f"  {s['name']:20s} {s['points']:4d} points{note}  {keys}")
    lines.append("claims files (fastvlm-bench claims RESULTS --claims FILE):")
    for c in data["claims"]:
        lines.append(f"  {c['file']:40s} {c['claims']:3d} claims {c['points']:3d} points  {c['description']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    data = listing()
    print(json.dumps(data, indent=1, default=str) if getattr(args, "json", False) else render_text(data))
    return 0
