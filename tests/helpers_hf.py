"""Two-layer, full-width copies of the shipped transformers systems, for fast tests of the
``hf=PATH`` path (the same code as ``hf=NAME``). Images are made smaller where a family's
processor allows it (a smaller crop, fewer tiles), so a test pays for seconds, not minutes;
token counts still come from the real processor and the real forward."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "bench" / "data" / "hf"


def two_layer(name: str, dst: Path) -> Path:
    """Copy shipped ``name`` to ``dst/name`` with 2 text and 2 vision layers (and, for the
    families whose images are large, a smaller image that keeps the processor's arithmetic)."""
    out = dst / name
    shutil.copytree(SHIPPED / name, out)
    c = json.loads((out / "config.json").read_text())
    pp = json.loads((out / "preprocessor_config.json").read_text())
    proc = json.loads((out / "processor_config.json").read_text())
    c["text_config"]["num_hidden_layers"] = 2
    vc = c["vision_config"]
    if "depth" in vc:  # Qwen2.5-VL
        vc["depth"], vc["fullatt_block_indexes"] = 2, [1]
    elif "num_hidden_layers" in vc:
        vc["num_hidden_layers"] = 2
    if name == "fastvlm_0.5b":  # the timm tower keeps its depth; a 256 px crop: 16 tokens
        pp["size"], pp["crop_size"] = {"shortest_edge": 256}, {"height": 256, "width": 256}
    if name == "smolvlm_256m":  # 256 px tiles of 16 tokens, images split up to 512 px
        vc["image_size"] = 256
        pp["size"], pp["max_image_size"] = {"longest_edge": 512}, {"longest_edge": 256}
        proc["image_seq_len"] = 16
    if name == "gemma3_4b":  # 224 px: 16x16 patches, the 256 tokens without pooling
        vc["image_size"] = 224
        pp["size"] = {"height": 224, "width": 224}
    (out / "config.json").write_text(json.dumps(c))
    (out / "preprocessor_config.json").write_text(json.dumps(pp))
    (out / "processor_config.json").write_text(json.dumps(proc))
    return out
