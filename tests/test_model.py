"""The policy: the tiny checkpoint is an ordinary HF checkpoint; loading, references, freezing, LoRA."""

from __future__ import annotations

import json

import pytest
import torch

from videor4.policy.model import (
    CHAT_TEMPLATE,
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    LoraSpec,
    ModelConfig,
    ModelLoadError,
    count_parameters,
    load_policy,
    prepare_for_training,
    resolve,
    vision_tower,
    write_reference,
)
from videor4.rumination.protocol import ToolCall, format_assistant_turn


def test_tiny_checkpoint_loads_with_the_standard_auto_classes(tiny_dir):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "preprocessor_config.json",
    ):
        assert (tiny_dir / name).is_file(), name
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    proc = AutoImageProcessor.from_pretrained(tiny_dir)
    assert model.config.model_type == "qwen2_5_vl"
    # TRL reloads the reference model from config._name_or_path
    assert model.config._name_or_path == str(tiny_dir)
    assert model.config.image_token_id == tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert proc.merge_size == 2 and proc.patch_size == 14
    assert tok.chat_template == CHAT_TEMPLATE


def test_tokenizer_keeps_qwen_tokens_whole_and_reads_codes_per_character(tiny_dir):
    tok = load_policy(tiny_dir).tokenizer
    for special in SPECIAL_TOKENS + ["<tool_call>", "</tool_call>"]:
        assert len(tok(special, add_special_tokens=False).input_ids) == 1, special
    pieces = tok.convert_ids_to_tokens(tok("K417", add_special_tokens=False).input_ids)
    assert [p.lstrip("Ġ") for p in pieces] == ["K", "4", "1", "7"]
    # tool-call tags survive decoding with special tokens skipped; the end-of-turn token does not
    ids = tok("<tool_call>{}</tool_call><|im_end|>", add_special_tokens=False).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "<tool_call>{}</tool_call>"


def test_chat_template_renders_structured_tool_calls_like_the_protocol(tiny_dir):
    tok = load_policy(tiny_dir).tokenizer
    call = ToolCall("cropping", {"target_image": 3, "bbox_2d": [0.1, 0.2, 0.5, 0.6]})
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What does it say?"}]}
    structured = [
        user,
        {
            "role": "assistant",
            "content": "Zoom.",
            "tool_calls": [{"type": "function", "function": call.to_dict()}],
        },
    ]
    as_text = [user, {"role": "assistant", "content": format_assistant_turn("Zoom.", call)}]
    rendered = tok.apply_chat_template(structured, tokenize=False)
    assert rendered == tok.apply_chat_template(as_text, tokenize=False)
    assert rendered.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert "<|im_start|>system\n" in rendered  # a default system turn when none is given
    tool_turn = tok.apply_chat_template(
        as_text + [{"role": "tool", "content": [{"type": "text", "text": "ok"}]}], tokenize=False
    )
    assert tool_turn.startswith(rendered) and tool_turn.endswith("<|im_start|>tool\nok<|im_end|>\n")
    prompt = tok.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_reference_directory_names_the_base_model(tmp_path, tiny_dir):
    ref = tmp_path / "base"
    write_reference(ref, str(tiny_dir), revision=None)
    assert resolve(ref) == (str(tiny_dir), None)
    assert json.loads((ref / "base_model.json").read_text())["name_or_path"] == str(tiny_dir)
    policy = load_policy(ref)  # follows the reference
    assert policy.source == str(tiny_dir)


def test_loading_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load a policy from"):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="base_model stage"):
        load_policy("tiny")


def test_frozen_vision_tower_gets_no_gradient(tiny_dir):
    model = prepare_for_training(load_policy(tiny_dir).model, ModelConfig(freeze_vision=True))
    assert not any(p.requires_grad for p in vision_tower(model).parameters())
    assert count_parameters(model, trainable_only=True) < count_parameters(model)
    assert model.get_input_embeddings().weight.requires_grad


def test_lora_trains_adapters_of_the_language_model_only(tiny_dir):
    model = load_policy(tiny_dir).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = prepare_for_training(model, ModelConfig(lora=LoraSpec(enabled=True, r=4, alpha=8)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)  # a non-trivial adapter
    merged = model.merge_and_unload()
    after = merged.state_dict()
    assert set(after) == set(before)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed and all("language_model" in k for k in changed)


def test_a_chat_template_kept_with_the_processor_is_found(tmp_path, tiny_dir):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, ckpt)
    (ckpt / "chat_template.jinja").unlink()
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    (ckpt / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    assert load_policy(ckpt).tokenizer.chat_template == CHAT_TEMPLATE
