"""Encoding multi-turn rumination conversations: the assistant-only loss mask, token by token."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from videor4.policy.encoding import IGNORE_INDEX, EncodingError, PolicyEncoder
from videor4.policy.model import IMAGE_TOKEN, load_policy
from videor4.rumination.protocol import SYSTEM_PROMPT, ToolCall, format_assistant_turn


@pytest.fixture(scope="module")
def policy(tiny_dir):
    return load_policy(tiny_dir)


@pytest.fixture(scope="module")
def encoder(policy):
    return PolicyEncoder(policy.tokenizer, policy.image_processor)


THOUGHT_1 = "The sign is too small. I will zoom into image 2."
CALL_1 = ToolCall("cropping", {"bbox_2d": [0.1, 0.2, 0.5, 0.6], "target_image": 2})
OBSERVATION = "Here is the cropped region (112x56) (image 3):"
FINAL = 'Now I can read it: "K417".\n\\boxed{K417}'


def hand_built(tmp_path) -> list[dict]:
    """system → user(2 frames + question) → assistant(call) → tool(text + crop) → assistant(answer)."""
    crop = tmp_path / "crop.png"
    Image.new("RGB", (112, 56), (200, 30, 30)).save(crop)
    frames = [Image.new("RGB", (56, 56), (i * 100, 0, 0)) for i in range(2)]
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [{"type": "image", "image": f} for f in frames]
            + [{"type": "text", "text": "What is the code?"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": format_assistant_turn(THOUGHT_1, CALL_1)}],
        },
        {
            "role": "tool",
            "content": [{"type": "text", "text": OBSERVATION}, {"type": "image", "image": str(crop)}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": FINAL}]},
    ]


def test_loss_mask_covers_assistant_tokens_only(tmp_path, encoder, policy):
    tok = policy.tokenizer
    messages = hand_built(tmp_path)
    enc = encoder.encode(messages)
    ids, labels = enc.input_ids, enc.labels
    assert len(ids) == len(labels)

    # The sequence is exactly the chat template's rendering with each image expanded
    # to its visual-token count: 56x56 → 4x4 patches of 14 px → 4 tokens after the 2x2 merge;
    # 112x56 → 8 tokens.
    rendered = tok.apply_chat_template(messages, tokenize=False)
    counts = [4, 4, 8]
    pieces = rendered.split(IMAGE_TOKEN)
    expanded = pieces[0] + "".join(IMAGE_TOKEN * n + p for n, p in zip(counts, pieces[1:]))
    assert ids == tok(expanded, add_special_tokens=False).input_ids
    assert enc.num_images == 3 and enc.image_grid_thw.tolist() == [[1, 4, 4], [1, 4, 4], [1, 4, 8]]

    # Exactly two spans are learned: each assistant turn's text and its end-of-turn token.
    learned = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    spans = enc.turn_spans
    assert learned == [i for start, end in spans for i in range(start, end)]
    expected = [format_assistant_turn(THOUGHT_1, CALL_1) + "<|im_end|>", FINAL + "<|im_end|>"]
    for (start, end), text in zip(spans, expected):
        assert tok.decode(ids[start:end]) == text
        assert ids[start:end] == tok(text, add_special_tokens=False).input_ids
    for i, (token, label) in enumerate(zip(ids, labels)):
        assert label == (token if any(s <= i < e for s, e in spans) else IGNORE_INDEX), i

    # What the model did not write is masked: system, question, images, the tool observation,
    # and the template's role headers.
    masked_text = tok.decode([t for t, lab in zip(ids, labels) if lab == IGNORE_INDEX])
    for text in (
        SYSTEM_PROMPT[:40],
        "What is the code?",
        OBSERVATION,
        "<|im_start|>assistant\n",
        "<|im_start|>tool\n",
    ):
        assert text in masked_text
    assert all(labels[i] == IGNORE_INDEX for i, t in enumerate(ids) if t == encoder.image_token_id)


def test_collated_batch_feeds_the_model_and_its_loss_is_assistant_only(tmp_path, encoder, policy):
    messages = hand_built(tmp_path)
    short = messages[:2] + [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{A}"}]}]
    batch = encoder.collate([encoder.encode(messages), encoder.encode(short)])
    assert batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"][1].sum() == len(encoder.encode(short))
    assert (
        (batch["mm_token_type_ids"] == 1).sum()
        == (batch["input_ids"] == encoder.image_token_id).sum()
        == 4 + 4 + 8 + 4 + 4
    )
    assert batch["image_grid_thw"].shape == (5, 3)
    model = policy.model.eval()
    with torch.no_grad():
        out = model(**batch)
    logits = out.logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, manual, atol=1e-4)

    left = encoder.collate([encoder.encode(messages), encoder.encode(short)], padding_side="left")
    assert left["attention_mask"][1, 0] == 0 and left["attention_mask"][1, -1] == 1


def test_prompt_encoding_ends_with_the_generation_header(tmp_path, encoder, policy):
    enc = encoder.encode_prompt(hand_built(tmp_path)[:2])
    assert policy.tokenizer.decode(enc.input_ids).endswith("<|im_start|>assistant\n")
    assert enc.num_loss_tokens == 0 and enc.num_images == 2


def test_bad_conversations_are_encoding_errors(tmp_path, encoder, policy):
    messages = hand_built(tmp_path)
    (tmp_path / "crop.png").unlink()
    with pytest.raises(EncodingError) as err:
        encoder.encode(messages)
    assert err.value.reason == "missing_image" and "crop.png" in str(err.value)

    short = PolicyEncoder(policy.tokenizer, policy.image_processor, max_length=50)
    with pytest.raises(EncodingError) as err:
        short.encode(messages[:2])
    assert err.value.reason == "too_long"

    # a template that rewrites earlier turns (here: a running message count up front)
    # cannot be masked turn by turn
    unstable = copy.deepcopy(policy.tokenizer)
    unstable.chat_template = "{{ messages | length }}:{% for m in messages %}{{ m['content'] }}|{% endfor %}"
    with pytest.raises(EncodingError) as err:
        PolicyEncoder(unstable, policy.image_processor).encode(
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        )
    assert err.value.reason == "template"
