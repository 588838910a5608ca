"""End-to-end report rendering from real Record objects, and a headless-browser check."""
from __future__ import annotations

import base64
import re
import struct
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from bench.results.records import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, PointConfig, Record, StageStats
from bench.results.store import ResultsStore

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROBE_JS = ("<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);"
            "var ok=i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;"
            "var p=document.createElement('p');p.id='probe';"
            "p.textContent='decoded='+ok+' broken='+(i.length-ok);document.body.appendChild(p);});</script>")

ENV = {"torch": "2.5.1", "timm": "1.0.11", "transformers": "4.46.0", "python": "3.11.7",
       "git_commit": "abc1234", "host": "testhost", "cpu_threads": 2}
LLM_PARAMS = {"qwen2_0.5b": 494_000_000, "qwen2_1.5b": 1_540_000_000}


def _stats(ms: float) -> StageStats:
    samples = [ms * f for f in (0.95, 0.98, 1.0, 1.02, 1.1)]
    return StageStats(median=ms, mean=sum(samples) / 5, p10=ms * 0.96, p90=ms * 1.06, iqr=ms * 0.04,
                      std=ms * 0.05, n=5, samples=samples)


def _record(sweep, encoder, res, llm, tokens, vision, prefill, status=STATUS_OK, message=""):
    cfg = PointConfig(encoder=encoder, resolution=res, llm=llm, dtype="bf16", device="cpu", threads=2)
    rec = Record(sweep=sweep, config=cfg, status=status, message=message, env=dict(ENV),
                 device_info={"name": "Test CPU"}, timestamp="2025-01-01T00:00:00")
    if status == STATUS_OK:
        proj = 0.4
        rec.visual_tokens = tokens
        rec.stages = {"preprocess": _stats(1.0), "vision_latency": _stats(vision), "projector": _stats(proj),
                      "prefill": _stats(prefill), "ttft": _stats(vision + proj + prefill + 0.8)}
        rec.flops = {"vision_latency": 2e10 * res / 256, "projector": 1e8, "prefill": 1e11, "ttft": 1.3e11}
        rec.params = {"vision": 125_000_000, "projector": 9_000_000, "llm": LLM_PARAMS.get(llm)}
        rec.peak_memory_mb = 1234.0
    return rec


def make_sweep(root: Path, name: str = "demo") -> Path:
    sweep_dir = root / "results" / name
    store = ResultsStore(sweep_dir)
    tokens = {256: 16, 512: 64, 768: 144, 1024: 256}
    vision = {256: 6.0, 512: 22.0, 768: 55.0, 1024: 110.0}
    for llm, per_tok in (("qwen2_0.5b", 0.2), ("qwen2_1.5b", 0.45)):
        for res in (256, 512, 768, 1024):
            store.put(_record(name, "fastvithd", res, llm, tokens[res], vision[res], 20 + per_tok * tokens[res]))
    store.put(_record(name, "vit_l14", 336, "qwen2_0.5b", 576, 130.0, 140.0))
    store.put(_record(name, "vit_l14", 672, "qwen2_1.5b", 2880, 0, 0, status=STATUS_ERROR,
                      message="CUDA out of memory while allocating 12.00 GiB"))
    store.put(_record(name, "siglip_so400m", 1152, "qwen2_1.5b", 0, 0, 0, status=STATUS_SKIPPED,
                      message="siglip_so400m+qwen2_1.5b needs ~4.1 GiB for parameters in bf16 on cpu, "
                              "only 2.0 GiB available"))
    store.consolidate()
    return sweep_dir


def write_accuracy(path: Path) -> Path:
    rows = []
    acc = {"gqa": 60.0, "textvqa": 50.0, "pope": 85.0, "docvqa": 30.0, "seedbench_img": 64.0}
    for llm, bonus in (("qwen2_0.5b", 0.0), ("qwen2_1.5b", 3.0)):
        for i, res in enumerate((256, 512, 768, 1024)):
            for b, v in acc.items():
                if llm == "qwen2_1.5b" and res == 256 and b == "docvqa":
                    continue  # incomplete Avg-5 on purpose
                rows.append(dict(encoder="fastvithd", resolution=res, llm=llm, benchmark=b, metric="exact_match",
                                 accuracy=v + bonus + 2.0 * i, source="lmms-eval", origin=f"lmms/{llm}_{res}.json"))
    rows.append(dict(encoder="fastvithd", resolution=1024, llm="qwen2_0.5b", benchmark="chartqa",
                     metric="relaxed_overall", accuracy=55.5, source="user", origin="manual"))
    rows.append(dict(encoder="convnext_l", resolution=512, llm="qwen2_0.5b", benchmark="gqa",
                     metric="exact_match", accuracy=61.0, source="user", origin="manual"))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _check_png(path: Path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 200 and height > 150, (path, width, height)
    return width, height


def _png_is_not_blank(path: Path) -> bool:
    """Decode the PNG (matplotlib's reader) and check it has many distinct colours, not one flat fill."""
    from matplotlib.image import imread

    img = imread(str(path))
    flat = img.reshape(-1, img.shape[-1]) if img.ndim == 3 else img.reshape(-1, 1)
    distinct = len({tuple(px) for px in flat[:: max(1, len(flat) // 50000)].round(3).tolist()})
    return distinct > 20 and float(img.std()) > 0.02


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from bench.report.render import render_report

    root = tmp_path_factory.mktemp("rep")
    sweep = make_sweep(root)
    acc = write_accuracy(sweep / "accuracy.csv")  # picked up by default
    out = root / "reports" / "demo"
    index = render_report(sweep, out)
    return root, sweep, acc, out, index


def test_report_files(rendered):
    root, sweep, acc, out, index = rendered
    assert index == out / "index.html" and index.is_file()
    assert (out / "report.md").is_file()
    pngs = sorted((out / "figures").glob("*.png"))
    names = {p.stem for p in pngs}
    for expected in ("accuracy_avg5_vs_ttft_ms", "accuracy_gqa_vs_ttft_ms", "accuracy_chartqa_vs_ttft_ms",
                     "vision_latency_vs_resolution", "visual_tokens_vs_resolution", "ttft_breakdown",
                     "ttft_heatmap"):
        assert expected in names, f"missing figure {expected}: {sorted(names)}"
    for png in pngs:
        _check_png(png)
        assert _png_is_not_blank(png), png
        svg = png.with_suffix(".svg")
        assert svg.is_file() and svg.read_text().lstrip().startswith(("<?xml", "<svg")), svg


def test_html_self_contained(rendered):
    root, sweep, acc, out, index = rendered
    text = index.read_text()
    imgs = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(imgs) == len(list((out / "figures").glob("*.png")))
    for b64 in imgs:
        assert base64.b64decode(b64)[:8] == PNG_MAGIC
    # Nothing fetched from elsewhere: no external src/href, no scripts.
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", text)
    assert "<script" not in text
    # Paper layer labelled; error/skipped listed with messages; environment shown.
    assert "paper-reported" in text and "not measured here" in text
    assert "CUDA out of memory" in text and "GiB available" in text
    assert "Test CPU" in text and "<td>bf16</td>" in text and "2.5.1" in text
    # Unmatched accuracy row reported, incomplete avg5 flagged.
    assert "convnext_l" in text
    assert "Accuracy is missing" not in text


def test_markdown_tables(rendered):
    root, sweep, acc, out, index = rendered
    md = (out / "report.md").read_text()
    assert "](figures/ttft_breakdown.png)" in md
    assert "| label |" in md
    assert "paper-reported" in md
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out / link).is_file(), link


def test_tables_keep_paper_apart(rendered):
    root, sweep, acc, out, index = rendered
    tables = {p.name: pd.read_csv(p) for p in (out / "tables").glob("*.csv")}
    measured = [t for n, t in tables.items() if "measured-points" in n]
    paper = [t for n, t in tables.items() if "paper-reported-points" in n]
    assert measured and paper
    for t in measured:
        assert (t["source"] != "paper-reported").all()
    for t in paper:
        assert (t["source"] == "paper-reported").all()
    avg = next(t for n, t in tables.items() if "avg5-per-configuration" in n)
    row = avg[(avg.encoder == "fastvithd") & (avg.resolution == 256) & (avg.llm == "qwen2_1.5b")
              & (avg.source == "lmms-eval")]
    assert len(row) == 1 and pd.isna(row["accuracy"].iloc[0]) and row["missing"].iloc[0] == "docvqa"


def test_report_without_accuracy_and_cli(tmp_path, monkeypatch):
    from bench.cli import main as cli_main

    def main(argv):
        return cli_main(["report", *argv])

    sweep = make_sweep(tmp_path, "noacc")
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--x", "vision_latency_ms"]) == 0
    text = (out / "index.html").read_text()
    assert "Accuracy is missing" in text
    assert (out / "figures" / "ttft_breakdown.png").is_file()
    assert (out / "figures" / "accuracy_avg5_vs_vision_latency_ms.png").is_file()  # paper layer only
    # Default output folder: reports/<sweep name> under the working directory.
    monkeypatch.chdir(tmp_path)
    assert main([str(sweep / "results.csv"), "--no-paper", "--benchmarks", "gqa,pope"]) == 0
    default = tmp_path / "reports" / "noacc"
    assert (default / "index.html").is_file() and (default / "report.md").is_file()
    assert not list((default / "figures").glob("accuracy_*"))  # no accuracy, no paper layer
    # Bad accuracy file: clear error, non-zero exit.
    bad = tmp_path / "bad.csv"
    bad.write_text("encoder,resolution,llm,score\nfastvithd,256,qwen2_0.5b,50\n")
    assert main([str(sweep), "--out", str(out), "--accuracy", str(bad)]) == 2
    assert main([str(tmp_path / "nope"), "--out", str(out)]) == 2


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent "
                    "(apt-get install -y chromium) - browser rendering check not run")
def test_html_in_headless_chromium(rendered):
    root, sweep, acc, out, index = rendered
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")  # test output only, never committed
    shot = ARTIFACTS / "report_screenshot.png"
    if shot.exists():
        shot.unlink()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars"]
    url = index.resolve().as_uri()
    with tempfile.TemporaryDirectory() as prof:
        dom = subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={prof}", "--virtual-time-budget=5000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    n_img = len(list((out / "figures").glob("*.png")))
    assert len(re.findall(r"<img src=\"data:image/png;base64,", dom.stdout)) == n_img, dom.stdout[:500]
    assert "fastvlm-bench report: demo" in dom.stdout
    # Did every embedded image actually decode? A test-only copy of the page with a probe script
    # writes the count of decoded images (naturalWidth > 0) into the DOM.
    probe = out / "_probe.html"
    probe.write_text(index.read_text().replace("</body>", PROBE_JS + "</body>"))
    try:
        with tempfile.TemporaryDirectory() as prof:
            res = subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={prof}", "--virtual-time-budget=5000",
                                  "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True, timeout=60)
    finally:
        probe.unlink()
    m = re.search(r'id="probe">decoded=(\d+) broken=(\d+)<', res.stdout)
    assert m, res.stdout[-500:] + res.stderr[-1000:]
    assert (int(m.group(1)), int(m.group(2))) == (n_img, 0)
    with tempfile.TemporaryDirectory() as prof:
        run = subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={prof}", "--enable-logging=stderr",
                              "--v=0", f"--screenshot={shot}", "--window-size=1280,2000", url],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    console_errors = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln and ("ERROR" in ln or "rror" in ln)]
    assert not console_errors, console_errors
    assert shot.is_file(), run.stderr[-2000:]
    w, h = _check_png(shot)
    assert (w, h) == (1280, 2000)
    assert _png_is_not_blank(shot), "screenshot looks blank"


def test_headline_table_fastest_per_budget_and_speedups():
    """The opening table: per token budget the fastest configuration, and its speed-up over the
    fastest ViT and ConvNeXt of that budget, the ratio of the TTFT medians inside its interval."""
    from bench.analysis.headline import headline_table
    from bench.results.store import records_to_frame

    recs = [_record("h", "fastvithd", 1024, "qwen2_0.5b", 256, 110.0, 70.0),
            _record("h", "vit_l14", 224, "qwen2_0.5b", 256, 300.0, 70.0),
            _record("h", "siglip_so400m", 224, "qwen2_0.5b", 256, 400.0, 70.0),  # slower ViT: not the baseline
            _record("h", "convnext_l", 512, "qwen2_0.5b", 256, 200.0, 70.0),
            _record("h", "vit_l14", 336, "qwen2_0.5b", 576, 130.0, 140.0),
            _record("h", "fastvithd", 512, "qwen2_1.5b", 64, 22.0, 40.0)]
    t = headline_table(records_to_frame(recs))
    ttft = {(r.config.encoder, r.config.resolution, r.config.llm): r.stages["ttft"].median for r in recs}
    row = t[(t["token budget"] == "145-256 tokens") & (t["llm"] == "qwen2_0.5b")].iloc[0]
    assert row["fastest configuration"] == "fastvithd@1024" and row["metric"] == "TTFT"
    assert row["ViT baseline"] == "vit_l14@224 (256 tokens)" and row["ConvNeXt baseline"] == "convnext_l@512 (256 tokens)"
    for fam, enc in (("ViT", ("vit_l14", 224)), ("ConvNeXt", ("convnext_l", 512))):
        m = re.fullmatch(r"([\d.]+)x \[([\d.]+)x, ([\d.]+)x\]", row[f"speed-up over {fam}"])
        assert m, row[f"speed-up over {fam}"]
        point, low, high = map(float, m.groups())
        assert point == pytest.approx(ttft[(*enc, "qwen2_0.5b")] / ttft[("fastvithd", 1024, "qwen2_0.5b")], rel=5e-3)
        assert low <= point <= high and low < high
    vit = t[t["token budget"] == "257-576 tokens"].iloc[0]
    assert vit["fastest configuration"] == "vit_l14@336" and vit["ViT baseline"] == "(the fastest is one)"
    assert vit["speed-up over ConvNeXt"] == ""  # no ConvNeXt in that budget
    assert set(t["llm"]) == {"qwen2_0.5b", "qwen2_1.5b"}  # never compared across LLMs


@pytest.fixture(scope="module")
def rendered_default(tmp_path_factory):
    """A report as a default run makes it: no accuracy file."""
    from bench.report.render import render_report

    root = tmp_path_factory.mktemp("repdef")
    sweep = make_sweep(root, "default")
    out = root / "reports" / "default"
    return out, render_report(sweep, out)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent "
                    "(apt-get install -y chromium) - browser rendering check not run")
def test_report_order_in_headless_chromium(rendered_default):
    """The report leads with what was measured: the headline table, then the claims, then paper
    accuracy x measured latency (the first figure), and the paper-only plots last; checked on
    the page as Chromium renders it."""
    from bench.report.render import CLAIMS_TITLE, HEADLINE_TITLE, JOINED_LABEL, JOINED_TITLE, _slug

    out, index = rendered_default
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars"]
    with tempfile.TemporaryDirectory() as prof:
        dom = subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={prof}", "--virtual-time-budget=5000",
                              "--dump-dom", index.resolve().as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    heads = re.findall(r'<h2 id="([^"]+)">([^<]*)</h2>', page)
    ids = [h[0] for h in heads]
    assert ids[:3] == [_slug(HEADLINE_TITLE), _slug(CLAIMS_TITLE), _slug(JOINED_TITLE)], ids
    assert heads[-1][1].startswith("Paper-reported only"), heads[-1]
    first_img = page.index("<img")
    assert page.index(f'id="{_slug(JOINED_TITLE)}"') < first_img  # no figure before the measured ones
    assert JOINED_LABEL in page[first_img:].split("</figure>")[0]  # the first figure: paper accuracy x measured latency
    # paper-only plots and tables only in the last section
    before = page[:page.index(f'id="{heads[-1][0]}"')]
    assert ": paper-reported points (" not in before and "paper-reported points (" in page
    # the headline table is the page's first table, and it holds the measured configurations
    first_table = page[page.index("<table"):page.index("</table>")]
    assert "fastest configuration" in first_table and "fastvithd@1024" in first_table
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shot = ARTIFACTS / "report_default_screenshot.png"
    with tempfile.TemporaryDirectory() as prof:
        run = subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={prof}", f"--screenshot={shot}",
                              "--window-size=1280,2400", index.resolve().as_uri()],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert _png_is_not_blank(shot)


def test_ratios_between_1_and_10_keep_three_decimals():
    """A ratio of 1.027 read "1.0" in the allocator table (one decimal for every value >= 1),
    which hides the 3 % the table is there to show."""
    from bench.report.frames import to_markdown

    md = to_markdown(pd.DataFrame({"ratio": [1.027, 0.947, 1.199], "ms": [257.8, 1234.5, 12.34]}))
    assert "| 1.027 |" in md and "| 0.947 |" in md and "| 1.199 |" in md
    assert "| 257.8 |" in md and "| 1,234 |" in md and "| 12.3 |" in md
