"""Real-size Qwen2-VL shapes for GPU benchmarks, without real weights.

``shaped_folder`` writes a model folder with a large model's ``config.json`` and the tiny default
model's tokenizer and processor (with a larger image budget): vLLM builds random weights for it
with ``load_format="dummy"``, transformers with ``from_config``. The tiny tokenizer cannot decode
the big vocabulary, so benchmarks sample fixed lengths without detokenising.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agents.default_model import default_model_path

#: The language model of each shape (Qwen2-VL-7B's; Qwen2.5-VL-3B's on the Qwen2-VL layout).
TEXT_SHAPES = {
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
    "3b": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
           "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936},
}
VISION = {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4}
ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}


def shaped_folder(shape: str, folder: Path, layers: int | None = None) -> Path:
    """``folder`` holding the ``shape``-sized config, the tiny tokenizer and processor;
    ``layers`` keeps the widths but builds that many language and vision layers (a small form
    of the shape for tests)."""
    tiny = default_model_path()
    folder.mkdir(parents=True, exist_ok=True)
    for item in tiny.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, folder / item.name)
    config = json.loads((tiny / "config.json").read_text())
    text = dict(TEXT_SHAPES[shape], **({"num_hidden_layers": layers} if layers else {}))
    config["text_config"].update(text, rope_parameters=ROPE,
                                 layer_types=["full_attention"] * text["num_hidden_layers"])
    config["vision_config"].update(VISION, hidden_size=text["hidden_size"],
                                   **({"depth": layers} if layers else {}))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    processor = json.loads((folder / "processor_config.json").read_text())
    processor["image_processor"]["size"] = {"shortest_edge": 28 * 28 * 4,
                                            "longest_edge": 28 * 28 * 256}
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2))
    return folder


def saved_shaped_model(shape: str, folder: Path, layers: int | None = None) -> Path:
    """A :func:`shaped_folder` with random bfloat16 weights saved in it (once, on the GPU), for a
    trainer; vLLM builds its own dummy weights and gets the trainer's at the start."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    if (folder / "model.safetensors.index.json").is_file():
        return folder
    shaped_folder(shape, folder, layers)
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(folder),
                                                        dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="5GB")
    del model
    torch.cuda.empty_cache()
    return folder
