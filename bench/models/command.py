"""``fastvlm-bench list``: the encoders, LLMs and tiling modes known to the registries."""
from __future__ import annotations

import argparse

NAME = "list"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="encoders, LLMs, tiling modes and the shipped transformers systems",
                              description="List the registered encoders, LLMs and tiling modes.")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from . import ENCODERS, LLMS, TILINGS
    from .materialize import count_parameters, meta_parameters

    print("encoders (name: channels, stride/patch, paper resolutions):")
    for name in ENCODERS.names():
        s = ENCODERS.get(name)
        res = ",".join(map(str, s.paper_resolutions)) or "-"
        print(f"  {name:15s} {s.channels:5d} ch  {s.kind} /{s.stride:<3d} {res:16s} {s.description}")
    print("llms (name: hidden, layers, parameters):")
    for name in LLMS.names():
        s = LLMS.get(name)
        with meta_parameters():
            n = count_parameters(s.build())
        print(f"  {name:15s} {s.hidden_size:5d} hidden {s.config['num_hidden_layers']:3d} layers "
              f"{n / 1e9:6.2f} B  {s.description}")
    print("tilings (tiling=name: grids of tiles, budget):")
    for name in TILINGS.names():
        t = TILINGS.get(name)
        budget = f"max {t.max_tiles} tiles" if t.max_tiles else "-"
        print(f"  {name:15s} {len(t.grids):3d} grids {budget:12s} {t.description}")
    print("hf systems (hf=name, or hf=PATH of a model folder: transformers' own class and processor):")
    for row in hf_systems():
        print(f"  {row['name']:22s} {row['model_type']:16s} {row['params_b']:6.2f} B  {row['class']}  "
              f"(config: {row['source']})")
    return 0


def hf_systems() -> list:
    """The shipped transformers systems (``bench/data/hf/``): name, model type, class, parameters
    (counted on the meta device, nothing allocated) and the Hub repo their config values are from."""
    from .hf import check_config, resolve_source, shipped_names
    from .materialize import count_parameters, meta_parameters

    out = []
    for name in shipped_names():
        src = resolve_source(name)
        config, cls = check_config(src)
        with meta_parameters():
            n = count_parameters(cls._from_config(config))
        out.append({"name": name, "model_type": config.model_type, "class": cls.__name__, "params_b": n / 1e9,
                    "source": src.meta().get("source", "?")})
    return out
