"""Check the import graph of bench/: no circle between modules, and the layers contract of
pyproject.toml's [tool.importlinter] (the stages import downwards only).

    python scripts/check_imports.py [--root DIR]     # DIR: a checkout (default: this one)

Why a script of its own rather than import-linter: the contract is written in import-linter's
format, so ``lint-imports`` reads the same table, but the check needs no package outside the
locked stack. Every import counts, also one inside a function: a deferred import still makes
the two modules depend on each other. Exit status 0 when the graph keeps the contract, 1 with
one line per broken rule otherwise.
"""
from __future__ import annotations

import argparse
import ast
import fnmatch
import sys
import tomllib
from pathlib import Path
from typing import Dict, List, Set


def modules(root: Path, package: str) -> Dict[str, Path]:
    """Every module of ``package`` under ``root``: dotted name -> file (a package is its __init__)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(mods: Dict[str, Path]) -> Dict[str, Set[str]]:
    """module -> the modules of the package it imports (``from .x import y``: ``.x.y`` when that
    is a module, else ``.x``)."""
    graph: Dict[str, Set[str]] = {}
    for name, path in mods.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    out.add(target if target in mods else base)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _layer(module: str, layers: List[str]) -> int | None:
    for i, layer in enumerate(layers):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def upward(graph: Dict[str, Set[str]], layers: List[str], ignore: List[str]) -> List[str]:
    """``a -> b`` for every import of a higher layer by a lower one (layers: highest first),
    except those matching an ``ignore_imports`` pattern (fnmatch, ``*`` within a name)."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = _layer(a, layers), _layer(b, layers)
            if la is None or lb is None or lb >= la:
                continue
            if any(fnmatch.fnmatchcase(a, pa.strip()) and fnmatch.fnmatchcase(b, pb.strip())
                   for pa, pb in (p.split("->") for p in ignore)):
                continue
            out.append(f"{a} -> {b}")
    return out


def check(root: Path) -> List[str]:
    """Every broken rule, one line each (empty: the graph keeps the contract)."""
    conf = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    package = conf["root_package"]
    graph = imports(modules(root, package))
    problems = [f"import circle: {' <-> '.join(c)}" for c in circles(graph)]
    for contract in conf.get("contracts", []):
        if contract["type"] != "layers":
            problems.append(f"contract {contract['name']!r}: type {contract['type']!r} is not checked here")
            continue
        problems += [f"upward import ({contract['name']}): {e}"
                     for e in upward(graph, contract["layers"], contract.get("ignore_imports", []))]
    return problems


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args(argv)
    problems = check(args.root)
    for p in problems:
        print(p)
    if not problems:
        n = len(modules(args.root, tomllib.loads((args.root / "pyproject.toml").read_text())["tool"]["importlinter"]["root_package"]))
        print(f"imports: {n} modules, no circle, every import downwards")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
