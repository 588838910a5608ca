"""Adding an encoder is one registration and nothing else: an encoder defined in this file,
registered with the same ``register_encoder`` the built-in families use, is a valid
``encoder=NAME`` of a real sweep (Hydra's ``encoder`` group is filled from the registry when
the sweep starts) and is measured end to end.

The sweep runs in a subprocess that imports this file as a plugin module, calls
:func:`register`, then runs the real CLI (``bench.cli.main``), as a user's own package would.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from torch import nn

from conftest import ROOT, TINY

NAME = "tiny_test_conv"
STRIDE = 16
CHANNELS = 24


class _PatchConv(nn.Module):
    """A single 16x16/16 convolution: (B, 3, H, W) -> (B, 24, H/16, W/16)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, CHANNELS, kernel_size=STRIDE, stride=STRIDE)

    def forward_features(self, pixels):
        return self.stem(pixels)


def register() -> None:
    """The whole of adding an encoder: one spec, one ``register_encoder`` call."""
    from bench.models.encoders import EncoderSpec, register_encoder

    register_encoder(EncoderSpec(
        name=NAME, description="one 16x16 patch convolution (test_add_encoder)", channels=CHANNELS,
        stride=STRIDE, kind="conv", builder=lambda resolution: _PatchConv(),
        downsamples=((STRIDE, STRIDE, 0),), min_resolution=STRIDE, tiny=True))


def _run_with_plugin(args, cwd):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import test_add_encoder as plugin; plugin.register(); "
            f"from bench.cli import main; raise SystemExit(main({list(args)!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_encoder_defined_here_runs_through_a_real_sweep(tmp_path):
    results = tmp_path / "results"
    p = _run_with_plugin([*TINY, "name=added", f"results_dir={results}", f"encoder={NAME}", "resolution=64"],
                         cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    records = list((results / "added" / "records").glob("*.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "ok", rec["message"]
    assert rec["config"]["encoder"] == NAME and rec["config"]["resolution"] == 64
    assert rec["visual_tokens"] == rec["visual_tokens_measured"] == (64 // STRIDE) ** 2
    assert rec["encoder_channels"] == CHANNELS

    listed = _run_with_plugin(["list"], cwd=ROOT)
    assert listed.returncode == 0 and NAME in listed.stdout

    # without the plugin the name is unknown to Hydra's encoder group: the registry is the only source
    from conftest import run_cli

    p = run_cli([*TINY, "name=added", f"results_dir={results}", f"encoder={NAME}"])
    assert p.returncode == 2 and NAME in p.stderr
