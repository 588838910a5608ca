"""The manual: the MkDocs site builds with --strict, its generated pages name every field they are
made from, and the README stays one screen of what a newcomer needs, with links that resolve."""
from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _mkdocs() -> list:
    exe = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if exe:
        return [exe]
    return [sys.executable, "-m", "mkdocs"]


#: A site that ``mkdocs build --strict`` has just built from this checkout: .ci/run builds it
#: (as an artefact, failing CI on a warning) before pytest starts and names it here, so that the
#: tests read that build instead of making a second one (about 35 s of CI). Unset: they build.
SITE_ENV = "FASTVLM_BENCH_BUILT_SITE"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``mkdocs build --strict`` into a temporary folder, with the real mkdocs and the hooks
    (or the build named by ``FASTVLM_BENCH_BUILT_SITE``)."""
    built = os.environ.get(SITE_ENV)
    if built:
        assert (Path(built) / "index.html").is_file(), f"{SITE_ENV}={built} holds no built site"
        return Path(built)
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    p = subprocess.run(_mkdocs() + ["build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"mkdocs build --strict failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    assert "WARNING" not in p.stderr, p.stderr
    return out


def _text(page: Path) -> str:
    """The page's visible text (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))


def test_site_builds_with_every_page(site):
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from pages(value)
            else:
                yield value

    listed = set(pages(nav))
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert listed == on_disk, f"pages not in nav: {on_disk - listed}; nav entries without a page: {listed - on_disk}"
    for page in listed:
        built = site / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        assert built.is_file(), page
        assert "<!-- generated:" not in built.read_text(), f"{page}: a generated part was not replaced"


def test_schema_page_names_every_record_field(site):
    from bench.results.records import PointConfig, Record, StageStats

    text = _text(site / "results-schema" / "index.html")
    for cls in (Record, PointConfig, StageStats):
        for f in dataclasses.fields(cls):
            assert re.search(rf"(?<![\w.]){re.escape(f.name)}(?![\w])", text), f"{cls.__name__}.{f.name} is not on the page"


def test_knob_page_names_every_config_field(site):
    from bench import config

    text = _text(site / "knobs" / "index.html")
    todo, seen = [("", config.BenchConfig)], set()
    while todo:
        prefix, cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for f in dataclasses.fields(cls):
            key = prefix + f.name
            assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", text), f"knob {key} is not on the page"
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            if dataclasses.is_dataclass(default):
                todo.append((key + ".", type(default)))
    assert {config.TimingConf, config.BackendConf, config.TilingConf, config.ReductionConf} <= seen


def test_registry_page_is_what_list_prints(site):
    from bench.models.command import listing

    text = _text(site / "registries" / "index.html")
    data = listing()
    for section in ("encoders", "llms", "tilings", "reductions", "backends", "hf_systems", "sweeps"):
        for item in data[section]:
            assert item["name"] in text, f"{section}: {item['name']}"


def test_readme_is_one_screen_with_working_links():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    # the two commands at the top, as they are (CI runs the second)
    assert lines[0] == "# fastvlm-bench" and lines[2] == "```bash"
    assert lines[4].endswith("pip install -r constraints/lock-base.txt -e . && fastvlm-bench")
    assert lines[6].endswith("bash scripts/install.sh && python -m pytest")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"^[a-z]+:", link) or link.startswith("#"):
            continue
        target = ROOT / link.split("#")[0]
        assert target.exists(), f"README.md links to {link}, which does not exist"
