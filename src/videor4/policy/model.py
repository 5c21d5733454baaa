"""Load a policy (any Qwen2-VL / Qwen2.5-VL checkpoint) or build the embedded `tiny` one.

`tiny` is a real Qwen2.5-VL-architecture model built from a config, with a
byte-level BPE tokenizer trained on the project's own text, the Qwen special
tokens and a chat template for system / user / assistant / tool turns with tool
calls and images.  It is saved as an ordinary Hugging Face checkpoint directory,
so `from_pretrained` (and TRL's reference-model reload) work on it.

A base "checkpoint" may also be a reference: a directory holding only
`base_model.json` ({"name_or_path": ...}), which is how the pipeline records a
Hub id or an external path without copying 16 GB of weights into the DVC cache.

Frames and crops reach the model as images (the video processor needs
torchvision, which the CPU machines lack, and TRL's GRPO has no video input).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videor4.core.io import read_json, write_json
from videor4.core.params import fill, section

if TYPE_CHECKING:  # heavy imports stay lazy so `video-r4 --help` is instant
    import torch

TINY = "tiny"
REFERENCE_FILE = "base_model.json"
END_OF_TURN = "<|im_end|>"
IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
PAD_TOKEN = "<|endoftext|>"
# tokens that stand for pixels: only an observation's encoding writes them, never the policy
VISION_PLACEHOLDERS = (VISION_START, VISION_END, "<|vision_pad|>", IMAGE_TOKEN, VIDEO_TOKEN)

# The Qwen2.5-VL special tokens, in Qwen's order.  `<tool_call>` / `</tool_call>`
# are single tokens but not "special": they must survive decoding.
SPECIAL_TOKENS = [
    PAD_TOKEN,
    "<|im_start|>",
    END_OF_TURN,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    VISION_START,
    VISION_END,
    "<|vision_pad|>",
    IMAGE_TOKEN,
    VIDEO_TOKEN,
]
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]

# Qwen2's pre-tokenizer split, with one change for the tiny model: a decimal such
# as a box coordinate "0.723" stays one piece for BPE to merge, so a box is a few
# number tokens rather than twenty digits (a small model loops on long digit runs).
# Other digits are single tokens, so a code like "K417" is read character by character.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\d\.\d+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Renders content as a string or a list of {"type": "text"|"image"} parts, structured
# `tool_calls` (OpenAI style) the way `protocol.format_tool_call` writes them, and
# `tool` turns.  Prefix-stable: rendering messages[:k] is a prefix of messages[:k+1],
# which the loss mask relies on.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] is not none %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}"
    "{% set fn = call['function'] if call['function'] is defined else call %}"
    "{% if not loop.first or message['content'] %}{{ '\\n' }}{% endif %}"
    "<tool_call>{{ '\\n' }}"
    "{\"name\": {{ fn['name'] | tojson }}, \"arguments\": {{ fn['arguments'] | tojson }}}"
    "{{ '\\n' }}</tool_call>"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


@dataclass
class TinySpec:
    """Sizes of the embedded default (Qwen2.5-VL architecture, built from config)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 128
    vision_intermediate_size: int = 256
    vision_depth: int = 2
    vision_num_heads: int = 4
    max_position_embeddings: int = 8192


@dataclass
class LoraSpec:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # language-model projections only; the vision tower is frozen or fully trained
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    """`model:` in params.yaml."""

    name_or_path: str = TINY  # a local path or Hub id of a Qwen2(.5)-VL checkpoint, or `tiny`
    revision: str | None = None
    dtype: str = "auto"  # auto (bf16 where the hardware has it, else fp32) | float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"
    freeze_vision: bool = True
    gradient_checkpointing: bool = False
    lora: LoraSpec = field(default_factory=LoraSpec)
    tiny: TinySpec = field(default_factory=TinySpec)


# ---------------------------------------------------------------- tokenizer
def tokenizer_corpus(trajectory_files: Iterable[str | os.PathLike]) -> Iterator[str]:
    """The project's own text: the system prompt, every turn of the given trajectories and the
    perception-pretraining questions about them."""
    from videor4.core.io import read_jsonl
    from videor4.rumination.protocol import (
        LOCATE_QUESTION,
        SYSTEM_PROMPT,
        format_assistant_turn,
        system_prompt,
        user_prompt_text,
    )
    from videor4.rumination.tools import VisionConfig
    from videor4.rumination.trajectory import Trajectory

    yield SYSTEM_PROMPT
    # every box coordinate a crop call can write, so each is one token (perception pretraining ties them)
    for _ in range(2):  # BPE merges what it sees at least twice
        yield " ".join(json.dumps(round(i / 100, 2)) for i in range(101))
        # the questions perception pretraining asks, about every panel of the generator
        yield from perception_questions()
    prompts = {SYSTEM_PROMPT}
    for path in trajectory_files:
        for row in read_jsonl(path):
            traj = Trajectory.from_dict(row)
            # a non-default clip limit changes the prompt; the default corpus stays as it was
            prompt = system_prompt(VisionConfig.from_dict(traj.vision).max_frames_per_clip)
            if prompt not in prompts:
                prompts.add(prompt)
                yield prompt
            yield user_prompt_text(traj.question, len(traj.frame_indices))
            yield LOCATE_QUESTION.format(question=traj.question)  # perception pretraining asks this too
            for option in traj.options or []:
                yield option
            for step in traj.steps:
                yield format_assistant_turn(step.thought, step.tool_call)
                yield step.observation_text
            yield format_assistant_turn(traj.final_thought, answer=traj.final_answer)


def perception_questions() -> Iterator[str]:
    """Every read question the synthetic generator can ask, with every named colour."""
    from videor4.data.synthetic import PALETTE, READ_TEMPLATES

    for template in READ_TEMPLATES.values():
        for colour in PALETTE:
            yield template.format(c=colour)


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """A byte-level BPE (Qwen2 pre-tokenization) with the Qwen special tokens and our chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END_OF_TURN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens(TOOL_TOKENS)  # single tokens, but not special: decoding must keep them
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_image_processor(min_pixels: int, max_pixels: int):
    """Qwen2-VL image processor whose budget is wide enough to pass the tools' images through unchanged
    (the tools already smart-resize to multiples of 28)."""
    # the PIL implementation: the default one needs torchvision
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)


# ---------------------------------------------------------------- the tiny model
def build_tiny_model(spec: TinySpec, tokenizer, seed: int = 0):
    """A randomly initialised Qwen2.5-VL with `spec`'s sizes and `tokenizer`'s ids."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    head_dim = spec.hidden_size // spec.num_attention_heads
    if head_dim % 2 or spec.hidden_size % spec.num_attention_heads:
        raise ValueError(
            f"model.tiny: hidden_size {spec.hidden_size} must split into even heads of "
            f"{spec.num_attention_heads}"
        )
    half = head_dim // 2
    # multimodal RoPE splits each head's rotary half into (time, height, width) like Qwen's [16, 24, 24]
    t = half // 4
    mrope = [t, (half - t) // 2, half - t - (half - t) // 2]
    ids = {
        name: tokenizer.convert_tokens_to_ids(name)
        for name in (IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END)
    }
    vocab = -(-len(tokenizer) // 64) * 64  # the trained vocabulary, padded for efficient matmuls
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_key_value_heads": spec.num_key_value_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            "bos_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "num_heads": spec.vision_num_heads,
            "out_hidden_size": spec.hidden_size,
            "fullatt_block_indexes": [spec.vision_depth - 1],
        },
        image_token_id=ids[IMAGE_TOKEN],
        video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


# ---------------------------------------------------------------- loading
@dataclass
class Policy:
    """A model with what it takes to encode its inputs."""

    model: Any
    tokenizer: Any
    image_processor: Any
    source: str  # what was loaded (a path or Hub id)


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def write_reference(out_dir: str | os.PathLike, name_or_path: str, revision: str | None = None) -> Path:
    """Record an external base model (Hub id or path) without copying its weights."""
    path = Path(out_dir) / REFERENCE_FILE
    write_json(path, {"name_or_path": name_or_path, "revision": revision})
    return path


def resolve(name_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """Follow a reference directory to the checkpoint it names; (path or id, revision)."""
    ref = Path(name_or_path) / REFERENCE_FILE
    if ref.is_file():
        data = read_json(ref)
        return str(data["name_or_path"]), data.get("revision")
    return str(name_or_path), None


def torch_dtype(name: str, device: str | None = None) -> "torch.dtype":
    """`auto` → bf16 where the hardware has it, else fp32."""
    import torch

    if name == "auto":
        on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"model.dtype must be auto, float32, bfloat16 or float16, not {name!r}") from None


class ModelLoadError(RuntimeError):
    pass


def load_policy(
    name_or_path: str | os.PathLike,
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    device: str | None = None,
    revision: str | None = None,
) -> Policy:
    """Load any Qwen2-VL / Qwen2.5-VL checkpoint (local path, Hub id, or reference directory).

    Offline when HF_HUB_OFFLINE=1 (transformers honours it).  The image processor is
    the PIL one when torchvision is absent.
    """
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    source, ref_revision = resolve(name_or_path)
    revision = revision or ref_revision
    if source == TINY:
        raise ModelLoadError(
            "'tiny' is built by the base_model stage; load its output directory (models/base)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        image_processor = AutoImageProcessor.from_pretrained(source, revision=revision)
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            revision=revision,
            dtype=torch_dtype(dtype, device),
            attn_implementation=attn_implementation,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a policy from {source!r}: {str(exc).splitlines()[0]}") from exc
    if model.config.model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise ModelLoadError(
            f"{source!r} is a {model.config.model_type} model; Qwen2-VL or Qwen2.5-VL expected"
        )
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = processor_chat_template(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN if PAD_TOKEN in tokenizer.get_vocab() else tokenizer.eos_token
    if device:
        model.to(device)
    return Policy(model=model, tokenizer=tokenizer, image_processor=image_processor, source=source)


def processor_chat_template(source: str) -> str | None:
    """Some checkpoints keep the chat template with the processor (chat_template.json), not the tokenizer."""
    path = Path(source) / "chat_template.json"
    if path.is_file():
        return read_json(path).get("chat_template")
    return None


def save_policy(policy: Policy, out_dir: str | os.PathLike) -> None:
    """Write an ordinary HF checkpoint directory: config, weights, tokenizer, image processor, chat
    template."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(out)
    policy.tokenizer.save_pretrained(out)
    policy.image_processor.save_pretrained(out)


def vision_tower(model):
    """The vision encoder of a Qwen2(.5)-VL model (wrapped by peft or not)."""
    for candidate in (
        model,
        getattr(model, "model", None),
        getattr(getattr(model, "base_model", None), "model", None),
    ):
        if candidate is None:
            continue
        for path in ("visual", "model.visual"):
            obj = candidate
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if obj is not None:
                return obj
    raise ModelLoadError(f"{type(model).__name__} has no vision tower ('visual')")


def prepare_for_training(model, config: ModelConfig):
    """Freeze the vision tower and/or wrap in LoRA, as configured (the trainer turns on checkpointing)."""
    if config.freeze_vision:
        for p in vision_tower(model).parameters():
            p.requires_grad_(False)
    if config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        # anchored on the language model so the vision tower's projections stay untouched
        targets = "|".join(config.lora.target_modules)
        lora = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=rf".*language_model.*\.({targets})",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


def describe(model) -> dict[str, Any]:
    cfg = model.config
    text = getattr(cfg, "text_config", cfg)
    return {
        "model_type": cfg.model_type,
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "hidden_size": text.hidden_size,
        "num_hidden_layers": text.num_hidden_layers,
        "vocab_size": text.vocab_size,
    }


def build_tiny_checkpoint(
    spec: TinySpec, corpus_files: Iterable[str | os.PathLike], out_dir: str | os.PathLike, seed: int = 0
) -> Policy:
    """Train the tokenizer on the project's trajectories, build the tiny model, save it as a HF checkpoint."""
    tokenizer = train_tokenizer(tokenizer_corpus(corpus_files), spec.vocab_size)
    model = build_tiny_model(spec, tokenizer, seed=seed)
    # Qwen's own budget: the tools hand over images already smart-resized, which pass through unchanged
    policy = Policy(model, tokenizer, make_image_processor(56 * 56, 28 * 28 * 16384), TINY)
    save_policy(policy, out_dir)
    return policy


def model_config(params: dict[str, Any]) -> ModelConfig:
    return fill(ModelConfig, section(params, "model"), "model")
