"""Bad input and failing servers in the endpoint mode: each is one line (exit 2, checked before
any request) or an ``error`` record with the reason, and the points measured before it are kept.

The failing servers are real HTTP servers on 127.0.0.1 in this process (the standard library's
``ThreadingHTTPServer``), each model name one behaviour: a 500 with a body, a stream dropped
midway, no ``usage``, an answer slower than the per-request timeout. The working path against a
real llama-server is tests/test_endpoint.py.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run_cli

MODELS = ["ok", "nousage", "drop", "e500", "slow"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: a drop is a drop
    image_urls: list = []  # the start of every image data URL received

    def log_message(self, *args):
        pass

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        if model == "e500":
            return self._json(500, {"error": {"message": "the model exploded", "type": "server_error"}})
        if model == "slow":
            time.sleep(3)
        urls = [part["image_url"]["url"] for part in body["messages"][0]["content"] if part["type"] == "image_url"]
        Handler.image_urls += [u[:30] for u in urls]
        images = len(urls)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def event(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        n = body["max_tokens"]
        for i in range(n):
            event({"model": model, "choices": [{"index": 0, "delta": {"content": f"t{i}"}, "finish_reason": None}]})
            time.sleep(0.002)
            if model == "drop" and i == 0:
                return  # the connection closes: no [DONE]
        event({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        if model != "nousage":
            event({"model": model, "choices": [], "usage": {"prompt_tokens": 10 + 50 * images, "completion_tokens": n}})
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def fake():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def _cfg(url, model, **kw):
    import bench.models  # noqa: F401  (the config checks)
    from bench.config import QUICK_TIMING, BenchConfig, EndpointConf

    e = EndpointConf(name=kw.pop("kind", "openai"), url=url, model=model, timeout_s=kw.pop("timeout_s", 10.0),
                     concurrency=kw.pop("concurrency", 1), image_format=kw.pop("image_format", "png"))
    return BenchConfig(name="errs", endpoint=e, resolution=64, decode_tokens=kw.pop("decode_tokens", 3),
                       timing=QUICK_TIMING, prompt_tokens=4, **kw)


def _measure(cfg):
    from bench.measure.endpoint_point import measure_endpoint_point
    from bench.measure.plan import resolve_plan

    return measure_endpoint_point(resolve_plan(cfg))


def test_a_working_server_gives_the_usage_numbers(fake):
    Handler.image_urls.clear()
    rec = _measure(_cfg(fake, "ok", concurrency=2, image_format="jpeg"))
    assert rec.status == "ok", rec.message
    assert Handler.image_urls and all(u.startswith("data:image/jpeg;base64,/9j/") for u in Handler.image_urls)
    assert "image_format=jpeg" in rec.config.endpoint_options and rec.endpoint_info["image_wh"] == [64, 64]
    info = rec.endpoint_info
    assert (info["text_prompt_tokens"], info["prompt_tokens"], info["image_tokens"]) == (10, 60, 50)
    assert info["output_tokens"] == 3 and rec.config.batch_size == 2
    assert len(info["requests"]["ttft_ms"]) == 2 * rec.stages["ttft"].n  # two requests per iteration
    assert rec.stages["itl"].n == 2 * 2 * rec.stages["ttft"].n  # 2 gaps per answer of 3 chunks
    assert info["server_prompt_ms"] is None  # a plain OpenAI server has no timings: null, not zero
    assert rec.to_row()["requests_per_s"] > 0


@pytest.mark.parametrize("model, timeout_s, reason", [
    ("e500", 10.0, "HTTP 500 from http://127.0.0.1:"),
    ("drop", 10.0, "without [DONE]: the server dropped it"),
    ("slow", 0.5, "within endpoint.timeout_s=0.5 s"),
    ("nope", 10.0, "model 'nope' is not served at"),
])
def test_a_failing_server_is_an_error_record_with_the_reason(fake, model, timeout_s, reason):
    rec = _measure(_cfg(fake, model, timeout_s=timeout_s))
    assert rec.status == "error" and reason in rec.message, rec.message
    assert "\n" not in rec.message
    if model == "e500":
        assert "the model exploded" in rec.message  # the body's message


def test_no_usage_is_measured_with_the_tokens_unknown(fake):
    rec = _measure(_cfg(fake, "nousage"))
    assert rec.status == "ok", rec.message
    assert rec.endpoint_info["prompt_tokens"] is None and rec.endpoint_info["image_tokens"] is None
    assert rec.visual_tokens is None and any("neither usage nor timings" in n for n in rec.endpoint_info["notes"])


def test_a_url_that_does_not_answer():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    rec = _measure(_cfg(f"http://127.0.0.1:{port}/v1", "ok"))
    assert rec.status == "error" and "connection refused" in rec.message


@pytest.mark.parametrize("knobs, says", [
    (dict(name="llama_cpp", launch="llama_cpp"), "endpoint.launch=llama_cpp needs endpoint.gguf=PATH"),
    (dict(name="openai"), "endpoint.url=http://HOST:PORT/v1 is needed"),
    (dict(name="openai", url="ftp://127.0.0.1:1/v1"), "endpoint.url must be http://HOST:PORT/v1"),
    (dict(name="openai", url="http://127.0.0.1:1/v1", image_format="gif"), "endpoint.image_format must be png or jpeg"),
    (dict(name="openai", url="http://127.0.0.1:1/v1", api_key_env="FVB_NO_SUCH_VARIABLE"),
     "FVB_NO_SUCH_VARIABLE: that environment variable is not set"),
    (dict(name="openai", url="http://127.0.0.1:1/v1", concurrency=0), "endpoint.concurrency must be a whole number >= 1"),
    (dict(name="nosuch", url="http://127.0.0.1:1/v1"), "unknown endpoint kind 'nosuch'"),
    (dict(name="none", url="http://127.0.0.1:1/v1"), "endpoint.url needs a server kind"),
])
def test_bad_config_is_refused_before_anything_runs(knobs, says):
    import bench.models  # noqa: F401  (the config checks)
    from bench.config import BenchConfig, ConfigError, EndpointConf, validate

    with pytest.raises(ConfigError, match=re.escape(says)):
        validate(BenchConfig(endpoint=EndpointConf(**knobs)), swept=())


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    p = run_cli(["sweep=none", "name=bad", f"results_dir={tmp_path}", "report=false", "endpoint=openai",
                 "endpoint.url=http://127.0.0.1:1/v1", "endpoint.image_format=gif"], cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "endpoint.image_format must be png or jpeg" in lines[0], p.stderr
    assert not (tmp_path / "bad").exists()  # nothing made


def test_points_before_a_failure_are_kept(fake, tmp_path):
    """A grid whose second point's server fails: the first point's ok record stays, the second
    is an error record with the reason, and the sweep goes on to the end."""
    p = run_cli(["-m", "sweep=none", "name=grid", f"results_dir={tmp_path}", "report=false", "timing=quick",
                 "endpoint=openai", f"endpoint.url={fake}", "endpoint.model=ok,e500,nousage", "decode_tokens=2",
                 "resolution=64"], cwd=tmp_path, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = {json.loads(f.read_text())["config"]["endpoint_model"]: json.loads(f.read_text())
            for f in (tmp_path / "grid" / "records").glob("*.json")}
    assert {m: r["status"] for m, r in recs.items()} == {"ok": "ok", "e500": "error", "nousage": "ok"}
    assert "the model exploded" in recs["e500"]["message"]


def test_the_encode_time_is_read_from_the_server_log():
    """llama-server's lines as this build writes them (``--log-timestamps``, M.SS.mmm.uuu): the
    encode is from a slot's "encoding mtmd batch" to the next "decoding image batch"; a line of
    another build ("image slice encoded in N ms") is read too, and text between is ignored."""
    from bench.measure.endpoint_server import encode_times

    log = (b"0.00.339.441 I slot process_mtmd: id  0 | task 17 | encoding mtmd batch from idx = 7, n_chunks = 1\n"
           b"0.00.340.000 I some other line\n"
           b"0.00.344.392 I decoding image batch 1/1, n_tokens_batch = 64\n"
           b"1.59.999.900 I slot process_mtmd: id  1 | task 18 | encoding mtmd batch from idx = 7, n_chunks = 1\n"
           b"\x1b[34m2.00.000.150\x1b[0m I decoding image batch 1/1, n_tokens_batch = 64\n"
           b"image slice encoded in 12 ms\n")
    assert encode_times(log) == pytest.approx([4.951, 0.25, 12.0])
