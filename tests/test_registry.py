"""Unknown names fail with the valid names listed; LLM shapes are the published ones."""
import pytest

from bench.models import build_vlm, get_encoder_spec, get_llm_spec
from bench.models.materialize import count_parameters, meta_parameters
from bench.registry import UnknownNameError


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        get_encoder_spec("fastvit_hd")
    msg = str(e.value)
    assert "fastvithd" in msg and "vit_l14" in msg and "convllava_l" in msg and "Did you mean" in msg


def test_unknown_llm_in_build_vlm():
    with pytest.raises(UnknownNameError, match="qwen2_0.5b"):
        build_vlm("tiny_vit", "qwen3_0.6b", 64, "cpu")


@pytest.mark.parametrize("name,billions", [("qwen2_0.5b", 0.494), ("qwen2_1.5b", 1.544), ("qwen2_7b", 7.616),
                                           ("vicuna_7b", 6.738)])
def test_llm_parameter_counts_match_published_sizes(name, billions):
    with meta_parameters():
        model = get_llm_spec(name).build()
    assert abs(count_parameters(model) / 1e9 - billions) < 0.002


def test_meta_build_of_7b_is_fast_and_allocates_nothing():
    import time

    import psutil

    rss0 = psutil.Process().memory_info().rss
    t = time.perf_counter()
    with meta_parameters():
        model = get_llm_spec("qwen2_7b").build()
    assert time.perf_counter() - t < 20
    real = [p for p in model.parameters() if p.device.type != "meta"]
    assert all(p.dim() == 1 for p in real)  # only norm vectors stay real; every matrix is on meta
    assert sum(p.numel() for p in real) < 1e6
    assert psutil.Process().memory_info().rss - rss0 < 2 * 2**30


def test_meta_parameters_only_affect_the_calling_thread():
    """The meta-device build patches a process-wide hook; another thread building a model at the
    same time still gets real parameters, and the hook is restored afterwards."""
    import threading

    from torch import nn

    original = nn.Module.register_parameter
    inside, built = threading.Event(), threading.Event()
    other = {}

    def build_elsewhere():
        inside.wait(10)
        other["linear"] = nn.Linear(4, 4)
        built.set()

    t = threading.Thread(target=build_elsewhere)
    t.start()
    with meta_parameters():
        inside.set()
        built.wait(10)
        mine = nn.Linear(4, 4)
    t.join()
    assert mine.weight.device.type == "meta"
    assert other["linear"].weight.device.type == "cpu"
    assert nn.Module.register_parameter is original


def test_the_registry_imports_no_timm_and_a_build_no_wandb():
    """Filling the registries (Hydra's config groups, a config error) imports neither timm nor
    wandb; building a timm tower imports timm but not wandb (timm's optional ``import wandb`` is
    hidden, 1.5-2 s a process); a later ``import wandb`` still gets the real package."""
    import subprocess
    import sys

    code = """
import sys
from bench.models.encoders import ENCODERS
assert ENCODERS.names() and 'timm' not in sys.modules and 'wandb' not in sys.modules, 'registry'
ENCODERS.get('tiny_vit').build(64)
assert 'timm' in sys.modules and 'wandb' not in sys.modules, 'build'
import timm.utils.summary
import wandb
assert wandb.__version__ and sys.modules['wandb'] is wandb
print('ok')
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]
