"""Visual-token counts: analytical num_tokens == what the real model produces."""
import pytest
import torch

from bench.models import ENCODERS, build_vlm, get_encoder_spec
from bench.models.encoders import InvalidResolutionError

FULL = [n for n in ENCODERS.names() if not ENCODERS.get(n).tiny]
RESOLUTIONS = [64, 128, 200, 224, 256, 320, 336, 378, 384, 448, 500, 512, 768, 1000, 1024, 1536]


#: the largest towers are checked at fewer sizes (a meta forward of ViTamin-L's 31 blocks is ~1 s),
#: still square sizes that are and are not multiples of the stride
FEWER = {"convnext_xxl": [200, 256, 336, 500, 512], "vitamin_l": [200, 224, 384, 500]}


def test_all_paper_encoders_registered():
    assert set(FULL) == {"fastvithd", "fastvit", "vit_l14", "siglip_so400m", "convnext_l", "convllava_l",
                         "convnext_xxl", "vitamin_l"}


@pytest.mark.parametrize("name", ENCODERS.names())
def test_analytical_tokens_match_model_forward_on_meta(name):
    spec = get_encoder_spec(name)
    checked = 0
    for res in FEWER.get(name, RESOLUTIONS):
        try:
            spec.check_resolution(res)
        except InvalidResolutionError:
            continue
        shape = spec.measure_tokens_on_meta(res, batch=2)
        assert shape == (2, spec.num_tokens(res), spec.channels), (name, res, shape)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("name,res,tokens", [
    ("fastvithd", 1024, 256), ("fastvithd", 336, 36), ("fastvithd", 256, 16), ("fastvithd", 768, 144),
    ("fastvit", 768, 576), ("fastvit", 256, 64),
    ("vit_l14", 336, 576), ("vit_l14", 224, 256), ("siglip_so400m", 384, 729),
    ("convnext_l", 336, 100), ("convnext_l", 512, 256), ("convnext_l", 320, 100),
    ("convllava_l", 768, 144), ("convllava_l", 1024, 256), ("convllava_l", 1536, 576),
    ("convnext_xxl", 256, 64), ("convnext_xxl", 512, 256),  # Table 4
    ("vitamin_l", 384, 576),  # row R34
])
def test_paper_token_counts(name, res, tokens):
    assert get_encoder_spec(name).num_tokens(res) == tokens


@pytest.mark.parametrize("name,res", [("fastvithd", 200), ("fastvit", 100), ("vit_l14", 56), ("siglip_so400m", 70),
                                      ("convnext_l", 100), ("convllava_l", 130)])
def test_real_forward_on_cpu_gives_analytical_tokens(name, res):
    """A real forward with materialised weights (not only meta shapes), at a small size."""
    vlm, _ = build_vlm(name, "qwen2_tiny", res, "cpu", "fp32")
    with torch.inference_mode():
        out = vlm.encode(torch.randn(1, 3, res, res))
    assert out.shape == (1, get_encoder_spec(name).num_tokens(res), get_encoder_spec(name).channels)
    assert torch.isfinite(out).all()


def test_vit_rejects_non_multiple_with_nearest_valid():
    with pytest.raises(InvalidResolutionError, match=r"multiple of its patch size 14.*\[378, 392\]"):
        get_encoder_spec("vit_l14").num_tokens(384)


@pytest.mark.parametrize("res", [0, -336, 8])
def test_too_small_or_negative_resolution(res):
    with pytest.raises(InvalidResolutionError, match="nearest valid|positive"):
        get_encoder_spec("fastvithd").check_resolution(res)


def test_resolution_must_be_int():
    with pytest.raises(InvalidResolutionError):
        get_encoder_spec("convnext_l").check_resolution(336.5)


def test_vitamin_l_is_timms_vitamin_large_384():
    """Our builder passes the token grid instead of letting timm find it with a forward pass;
    the module must be timm's ``vitamin_large_384`` parameter for parameter, buffer for buffer."""
    import timm

    with torch.device("meta"):
        ours = get_encoder_spec("vitamin_l").build(384).backbone
        theirs = timm.create_model("vitamin_large_384", pretrained=False, num_classes=0)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(theirs) and str(ours) == str(theirs)


@pytest.mark.parametrize("name,params_m", [("convnext_xxl", 843.4), ("vitamin_l", 332.9)])
def test_new_towers_parameter_counts(name, params_m):
    """ConvNeXt-XXL: 846 M with its classifier (Table 4), ViTamin-L: 333 M (row R34)."""
    from bench.models.materialize import count_parameters, meta_parameters

    with meta_parameters():
        enc = get_encoder_spec(name).build(384)
    assert count_parameters(enc) / 1e6 == pytest.approx(params_m, abs=0.1)
