"""The project's embedded default model: a tiny random-weight Qwen2-VL built offline.

Nothing is downloaded: the byte-level BPE tokenizer is trained on the spot from a small corpus in
this file, the chat template is written here, and the weights are drawn from a seeded generator.
The model is small enough to load in about a second on a CPU, yet shaped so that vLLM serves it
(head dims 64, M-RoPE sections summing to half the head dim). It is built once and cached:

>>> path = default_model_path()  # ~/.cache/zeroplay/models/tiny-qwen2-vl-v1, built if missing
>>> model = Qwen2VLForConditionalGeneration.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLProcessor,
    )

#: Bump the suffix whenever the model, tokenizer or processor built here changes.
MODEL_NAME = "tiny-qwen2-vl-v1"
#: What a built model folder holds; a cached folder missing any of them is not trusted.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json")

#: Qwen2-VL's special tokens, in Qwen's order.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

#: Image (and video frame) pixel bounds: patches of 14, merged 2x2, so one token per 28x28
#: pixels. A 320x240 image becomes 112x168 pixels, 24 tokens; no image gives more than 32.
MIN_PIXELS = 28 * 28 * 4
MAX_PIXELS = 28 * 28 * 32

#: Qwen2-VL's chat format: a default system turn, one vision placeholder per image or video
#: (the processor expands it to the image's tokens), and the assistant header on request.
CHAT_TEMPLATE = r"""
{%- set vision = namespace(images=0, videos=0) -%}
{%- for message in messages -%}
    {%- if loop.first and message['role'] != 'system' -%}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' -}}
    {%- endif -%}
    {{- '<|im_start|>' + message['role'] + '\n' -}}
    {%- if message['content'] is string -%}
        {{- message['content'] -}}
    {%- else -%}
        {%- for part in message['content'] -%}
            {%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}
                {%- set vision.images = vision.images + 1 -%}
                {%- if add_vision_id -%}
                    {{- 'Picture ' ~ vision.images ~ ': ' -}}
                {%- endif -%}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
            {%- elif part['type'] == 'video' or 'video' in part -%}
                {%- set vision.videos = vision.videos + 1 -%}
                {%- if add_vision_id -%}
                    {{- 'Video ' ~ vision.videos ~ ': ' -}}
                {%- endif -%}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
            {%- elif 'text' in part -%}
                {{- part['text'] -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
""".strip()

#: What the tokenizer learns its merges from: game talk, chat roles, digits and punctuation.
CORPUS = """\
You are a helpful assistant. You are playing a game with other players.
system
user
assistant
Look at the image and describe what you see in one short sentence.
The image shows a red cube, a blue sphere and a green cylinder on a grey floor.
There are three objects: two small metal spheres and one large rubber cube.
Which object changed between the two pictures? The yellow cylinder moved to the left.
The chart shows sales by month. The highest bar is in March, the lowest in October.
I think the spy is player 2, because their clue did not match the picture.
My clue is: shiny. I vote for player 3. I pass.
Answer with a single word. Answer: yes. Answer: no. The answer is 4.
Question: how many cubes are there? Answer: there are 5 cubes.
Colours: red, green, blue, yellow, purple, cyan, brown, grey, black, white, orange, pink.
Shapes: cube, sphere, cylinder, cone, square, circle, triangle, line, bar, dot.
Sizes and materials: small, large, tiny, big, metal, rubber, matte, shiny.
Positions: left, right, front, behind, above, below, next to, in the middle of, on top of.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 50 100 1000 2024 3.14 -7 +1 42%
Punctuation and code: {"answer": "red", "player": 1, "vote": [2, 3]} (a, b) <tag> a_b a-b a/b
Think step by step, then give your final answer.
First, I count the objects. Second, I compare their colours. Finally, I answer.
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX. Hello, world!
"""


def default_model_path(cache_dir: str | Path | None = None) -> Path:
    """The cached default model's directory, built there first if missing.

    ``cache_dir`` defaults to ``$ZEROPLAY_CACHE``, else ``~/.cache/zeroplay``. The model is built
    into a temporary sibling and renamed into place, so a killed build leaves no half model and
    concurrent builders all end up with the first finished copy.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("ZEROPLAY_CACHE") or Path.home() / ".cache" / "zeroplay"
    path = Path(cache_dir).expanduser() / "models" / MODEL_NAME
    if path.is_dir():
        if is_complete(path):
            return path
        aside = path.with_name(f".{MODEL_NAME}.incomplete-{time.time_ns()}")
        warnings.warn(f"{path} lacks some of {', '.join(MODEL_FILES)}: moved to {aside} and "
                      f"built again", stacklevel=2)
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            path.rename(aside)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.", dir=path.parent))
    try:
        build_default_model(staging)
        if not is_complete(staging):
            raise RuntimeError(f"building the default model wrote no {', '.join(MODEL_FILES)} "
                               f"(in {staging})")
        for item in staging.iterdir():  # transformers writes weights 0o600; let others read
            item.chmod(0o644)
        staging.chmod(0o755)  # and mkdtemp makes its folder 0o700
        staging.rename(path)
    except OSError:
        if not path.is_dir():  # not a lost race with another builder: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds every file of a loadable model (:data:`MODEL_FILES`), none empty."""
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0
               for name in MODEL_FILES)


def build_default_model(path: Path, seed: int = 0) -> Path:
    """Build the tiny Qwen2-VL (weights, tokenizer, processor) into ``path``; the same per seed."""
    # Imported here so that finding an already-built model costs no torch/transformers import.
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    tokenizer = build_tokenizer(CORPUS.splitlines(), vocab_size=1024)
    config = qwen2_vl_config(
        tokenizer,
        text={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1},
        vision={"depth": 2, "embed_dim": 128, "num_heads": 2, "mlp_ratio": 2},
    )
    torch.manual_seed(seed)
    # Drawn in float32, stored in bfloat16: the dtype vLLM serves it in (it downcasts float32).
    model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = generation_config(tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    # every process writes: a rank other than 0 building the cache must write the weights too
    model.save_pretrained(path, is_main_process=True)
    build_processor(tokenizer, MAX_PIXELS).save_pretrained(path)
    return path


def qwen2_vl_config(tokenizer: PreTrainedTokenizerFast, text: dict[str, Any],
                    vision: dict[str, Any], tie_word_embeddings: bool = False) -> Qwen2VLConfig:
    """A Qwen2-VL config for ``tokenizer`` with the given text and vision sizes. Attention heads
    must be 64 wide (every vLLM attention backend supports that); the vision tower's output
    width is the text model's."""
    from transformers import Qwen2VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    return Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 32768,
            # M-RoPE sections (time, height, width) must sum to head_dim / 2.
            "rope_parameters": {
                "rope_type": "default", "rope_theta": 1_000_000.0,
                "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": tie_word_embeddings,
            **text,
        },
        vision_config={
            "hidden_size": text["hidden_size"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            **vision,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_word_embeddings,
    )


def generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Generation stops at the end of a turn (or of the text); padding is ``<|endoftext|>``."""
    from transformers import GenerationConfig

    end_of_text, end_of_turn = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    return GenerationConfig(bos_token_id=end_of_text, eos_token_id=[end_of_turn, end_of_text],
                            pad_token_id=end_of_text)


def build_processor(tokenizer: PreTrainedTokenizerFast, max_pixels: int) -> Qwen2VLProcessor:
    """Qwen2-VL's processor around ``tokenizer``, images scaled to at most ``max_pixels``."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": max_pixels}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_tokenizer(lines: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of ``vocab_size`` tokens learnt from ``lines``, with Qwen's
    special tokens; the same lines give the same tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        padding_side="left",  # batched generation pads on the left
        chat_template=CHAT_TEMPLATE,
    )
