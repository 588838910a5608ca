"""The endpoint mode against a real llama-server on the tiny GGUF (docs/endpoint.md).

The server is the one ``scripts/llama_cpp.sh`` builds (or any ``llama-server`` on PATH, or
$FASTVLM_BENCH_LLAMA_SERVER); without one these tests are skipped with the reason, never faked.
The model is written by ``scripts/tiny_gguf.py`` (the ``gguf`` package and numpy) into a
temporary folder. Every address is loopback.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli


def _server_or_skip() -> str:
    from bench.config import ConfigError
    from bench.models.endpoints.llama_server import find_server

    try:
        return find_server(None)
    except ConfigError as exc:
        pytest.skip(f"no llama-server to test against ({exc})")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(llama-server, the tiny GGUF, its mmproj)."""
    pytest.importorskip("gguf", reason="the gguf package (pip install 'fastvlm-bench[endpoint]') writes the tiny model")
    server = _server_or_skip()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import tiny_gguf
    finally:
        sys.path.pop(0)
    model, mmproj = tiny_gguf.write_tiny(tmp_path_factory.mktemp("gguf"))
    return server, model, mmproj


def _launch_args(tiny, results, name):
    server, model, mmproj = tiny
    return ["sweep=none", f"name={name}", f"results_dir={results}", f"reports_dir={results.parent / 'reports'}",
            "endpoint=llama_cpp", "endpoint.launch=llama_cpp", f"endpoint.gguf={model}", f"endpoint.mmproj={mmproj}",
            f"endpoint.server_bin={server}", "endpoint.slots=2", "endpoint.ctx=4096", "endpoint.server_threads=1",
            "prompt_tokens=8"]


def _records(folder: Path):
    return [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]


def _servers_running(marker: str):
    """Pids of llama-server processes whose command line names ``marker`` (our temporary GGUF's
    path; the harness's own command line names it too, as ``endpoint.gguf=``)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"llama-server") and marker.encode() in argv:
                out.append(int(d.name))
    return out


def test_two_image_sizes_through_the_cli(tiny, tmp_path):
    """The issue's CI test: a launched llama-server, two image sizes through the CLI; the image
    tokens grow with the size, TTFT and the server's own timings are recorded, the log is kept
    beside the records and no server is left running."""
    results = tmp_path / "results"
    p = run_cli(["-m", *_launch_args(tiny, results, "ep"), "image_size=224x224,448x448", "decode_tokens=4",
                 "timing=quick", "timing.warmup=1", "timing.min_repeats=3", "timing.max_repeats=3", "report=true"], cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = sorted(_records(results / "ep"), key=lambda r: r["config"]["resolution"])
    assert [r["status"] for r in recs] == ["ok", "ok"], [r["message"] for r in recs]
    small, large = (r["endpoint_info"] for r in recs)
    # Qwen2-VL: 14 px patches merged 2x2 -> (224/28)^2 = 64 and (448/28)^2 = 256 image embeddings,
    # plus <|vision_start|> and <|vision_end|>: what the server spends on the image
    assert (small["image_tokens"], large["image_tokens"]) == (64 + 2, 256 + 2)
    assert recs[0]["visual_tokens"] == 66 and recs[1]["visual_tokens"] == 258
    for r in recs:
        info = r["endpoint_info"]
        assert r["stages"]["ttft"]["n"] == len(r["stages"]["ttft"]["samples"]) >= 2
        assert r["stages"]["ttft"]["median"] > 0 and r["stages"]["e2e"]["median"] >= r["stages"]["ttft"]["median"]
        assert info["server_prompt_ms"] > 0 and info["server_decode_per_token_ms"] > 0
        assert info["prompt_tokens"] == info["text_prompt_tokens"] + info["image_tokens"]
        assert info["output_tokens"] == 4 and info["fixed_output"] == "ignore_eos"  # ignore_eos held the length
        assert all(c == 0 for c in info["requests"]["cache_n"])  # every request encoded its image
        assert info["server_image_encode_ms"] is not None  # from the server's log
        assert Path(info["server_log"]).is_file() and Path(info["server_log"]).parent == results / "ep" / "endpoint"
        assert r["config"]["endpoint"] == "llama_cpp" and r["config"]["batch_size"] == 1
        assert info["server_cpus"] == [min(os.sched_getaffinity(0))]  # pinned: endpoint.server_threads=1
        assert "api_key" not in json.dumps(r).lower().replace("api_key_env", "")
    assert list((tmp_path / "reports" / "ep").rglob("endpoint_ttft.png")), "the report has no endpoint figure"
    md = next((tmp_path / "reports" / "ep").rglob("report.md")).read_text()
    # a server has no in-process stages: no empty vision-latency or TTFT-breakdown sections for it
    assert "## Vision-encoder latency vs resolution" not in md and "## TTFT breakdown" not in md
    assert "Every measured row is encoder-only" not in md
    assert not _servers_running(str(tiny[1])), "a llama-server outlived the sweep"
    _downstream(results / "ep", tmp_path)


def _downstream(folder: Path, tmp_path: Path) -> None:
    """compare, gate and the accuracy join read endpoint points as distinct points."""
    import pandas as pd

    from bench.analysis.join import join_efficiency_accuracy
    from bench.cli import main as cli

    out = tmp_path / "aa.json"
    assert cli(["compare", str(folder), str(folder), "--json", str(out)]) == 0  # A/A: no regression
    assert '"matched": 2' in out.read_text()  # the two image sizes pair up as two points
    gate = tmp_path / "gate.yaml"
    gate.write_text("target: endpoint:llama_cpp\nselect: {endpoint: llama_cpp}\ncheck_visual_tokens: true\n")
    assert cli(["gate", str(folder), "--config", str(gate)]) == 0  # the server's image tokens are its count
    df = pd.read_csv(folder / "results.csv")
    acc = pd.DataFrame([{"encoder": "endpoint:llama_cpp", "resolution": 448, "llm": "endpoint:tiny-qwen2vl.gguf",
                         "benchmark": "toy", "metric": "acc", "accuracy": 0.5, "source": "user", "origin": "test"}])
    joined, unmatched, _ = join_efficiency_accuracy(df, acc)
    assert len(joined) == 1 and len(unmatched) == 1 and int(joined["endpoint_image_tokens"].iloc[0]) == 258


def _start_and_wait(tiny, args, cwd):
    """The CLI with ``args``, once its llama-server runs (and a moment more: in the timed loop)."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=cwd, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _servers_running(str(tiny[1])) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if not _servers_running(str(tiny[1])):
        proc.kill()
        pytest.fail(f"the server never started: {proc.communicate()[1][-2000:]}")
    time.sleep(2.0)
    return proc


def _gone(tiny, seconds=15.0) -> bool:
    deadline = time.monotonic() + seconds
    while _servers_running(str(tiny[1])) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _servers_running(str(tiny[1]))


def test_sigkill_of_the_harness_takes_the_server_with_it(tiny, tmp_path):
    """No handler runs on SIGKILL: the kernel ends the server (PR_SET_PDEATHSIG)."""
    args = _launch_args(tiny, tmp_path / "results", "kill") + ["resolution=224", "timing.min_repeats=100000",
                                                               "timing.max_repeats=100000", "report=false"]
    proc = _start_and_wait(tiny, args, tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone(tiny), "the server outlived a SIGKILL of the harness"


def test_sigterm_stops_the_server(tiny, tmp_path):
    """SIGTERM while a point is measured: exit 143 with one line, an error record naming the
    signal, and the launched server gone."""
    results = tmp_path / "results"
    args = _launch_args(tiny, results, "sig") + ["resolution=224", "timing.max_seconds=60", "timing.min_repeats=1000",
                                                 "timing.max_repeats=100000", "report=false"]
    proc = _start_and_wait(tiny, args, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted by SIGTERM" in err.strip().splitlines()[-1]
    assert _gone(tiny), "the server outlived SIGTERM"
    (rec,) = _records(results / "sig")
    assert rec["status"] == "error" and "SIGTERM" in rec["message"]
