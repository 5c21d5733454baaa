"""Perception pretraining's training side: the ids its heads tie to, the collated dense labels and
attention targets, and the attention loss, on the tiny policy built from the small dataset."""

from __future__ import annotations

import pytest
import torch

from videor4.data.perception import COLOURS, GLYPH_CLASSES, NO_COLOUR, TRAIN_STREAM, make_example
from videor4.data.synthetic import SyntheticConfig
from videor4.policy.encoding import IGNORE_INDEX, PolicyEncoder
from videor4.policy.model import load_policy
from videor4.rumination.tools import VisionConfig
from videor4.train.pretrain import (
    ATTENTION_HEADS,
    PerceptionCollator,
    attention_loss,
    continuation_loss,
    coord_values,
    perception_token_ids,
    pretrain_settings,
)

WORLD = SyntheticConfig(preset="readable")
VISION = VisionConfig(
    num_frames=8,
    frame_max_pixels=6272,
    clip_max_pixels=50176,
    crop_min_pixels=12544,
    crop_max_pixels=50176,
    box_step=0.1,
)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    policy = load_policy(tiny_dir)
    return PolicyEncoder(policy.tokenizer, policy.image_processor)


def test_the_heads_tie_to_single_tokens_of_the_tiny_tokenizer(encoder):
    ids = perception_token_ids(encoder.tokenizer, 0.1)
    tok = encoder.tokenizer
    assert [tok.decode([i]) for i in ids["glyph"]] == list(GLYPH_CLASSES)
    assert [tok.decode([i]) for i in ids["colour"]] == [f" {c}" for c in COLOURS]
    assert [tok.decode([i]) for i in ids["coord"]] == [
        "0.0",
        "0.1",
        "0.2",
        "0.3",
        "0.4",
        "0.5",
        "0.6",
        "0.7",
        "0.8",
        "0.9",
        "1.0",
    ]
    assert coord_values(0.01)[:3] == [0.0, 0.01, 0.02] and len(coord_values(0.01)) == 101


def _collate(encoder, tasks: dict[str, float], indices: range):
    settings = pretrain_settings({"pretrain": {"tasks": tasks}})
    collator = PerceptionCollator(encoder, WORLD, VISION, settings)
    return collator, collator([{"index": i} for i in indices])


def test_locate_rows_point_the_box_tokens_at_the_asked_texts_cell(encoder):
    collator, batch = _collate(encoder, {"locate": 1.0}, range(4))
    image_token = encoder.image_token_id
    for row, index in enumerate(range(4)):
        example = make_example("locate", WORLD, VISION, 0, TRAIN_STREAM, index)
        targets = batch["attend_locate"][row]
        queries = targets.any(-1).nonzero().flatten()
        # the labels hold the phrase (the name and the box), and every position that predicts one of its
        # tokens is taught where to look; the crop call after it, which copies the box, is labelled apart
        phrase = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten()
        assert queries.tolist() == (phrase - 1).tolist() and len(queries) > 12
        assert encoder.tokenizer.decode(batch["labels"][row][phrase]).replace(
            " ", ""
        ) == example.phrase.replace(" ", "")
        call = (batch["continuation_labels"][row] != IGNORE_INDEX).nonzero().flatten()
        assert len(call) > 12 and int(call[0]) > int(phrase[-1])
        copied = encoder.tokenizer.decode(batch["continuation_labels"][row][call])
        assert "cropping" in copied and example.answer.replace(" ", "") in copied.replace(" ", "")
        keys = targets[queries[0]].nonzero().flatten()
        images = (batch["input_ids"][row] == image_token).nonzero().flatten()
        assert keys.tolist() == [int(images[example.target_cell])]
        assert not batch["attend_read"][row].any()
    # LOCATE teaches colours and boxes, not glyphs; every merged token has a label slot
    tokens = int((batch["input_ids"] == image_token).sum())
    assert batch["glyph_labels"].shape == (tokens,) and (batch["glyph_labels"] == IGNORE_INDEX).all()
    assert batch["coord_labels"].shape == (tokens, 4) and (batch["colour_labels"] != NO_COLOUR).sum() >= 4


def test_read_rows_point_each_character_at_its_slot(encoder):
    _, batch = _collate(encoder, {"read": 1.0}, range(3))
    tok = encoder.tokenizer
    for row, index in enumerate(range(3)):
        example = make_example("read", WORLD, VISION, 0, TRAIN_STREAM, index)
        targets = batch["attend_read"][row]
        queries = targets.any(-1).nonzero().flatten().tolist()
        written = "".join(tok.decode([int(batch["labels"][row, q + 1])]) for q in queries)
        assert written == example.answer  # the queries predict the code's characters, in order
        images = (batch["input_ids"][row] == encoder.image_token_id).nonzero().flatten().tolist()
        slots = example.slot_labels[0].reshape(-1)
        for k, q in enumerate(queries):
            cells = [images.index(key) for key in targets[q].nonzero().flatten().tolist()]
            assert cells and all(slots[c] == k for c in cells)
    assert (batch["colour_labels"] == IGNORE_INDEX).all() and (batch["glyph_labels"] != IGNORE_INDEX).all()


def test_with_copy_attention_the_copies_of_a_reading_look_at_the_phrases_characters(encoder):
    settings = pretrain_settings({"pretrain": {"tasks": {"read": 1.0}, "copy_attention": True}})
    batch = PerceptionCollator(encoder, WORLD, VISION, settings)([{"index": i} for i in range(3)])
    _, plain = _collate(encoder, {"read": 1.0}, range(3))
    tok = encoder.tokenizer
    for row, index in enumerate(range(3)):
        answer = make_example("read", WORLD, VISION, 0, TRAIN_STREAM, index).answer
        targets = batch["attend_read"][row]
        # the phrase's queries keep their image cells; the copies' queries are new, and each looks at
        # the phrase's token of the character it writes (twice: the quoted answer, the boxed one)
        assert torch.equal(targets & plain["attend_read"][row], plain["attend_read"][row])
        copies = (targets.any(-1) & ~plain["attend_read"][row].any(-1)).nonzero().flatten().tolist()
        ids = batch["input_ids"][row]
        written = "".join(tok.decode([int(ids[q + 1])]) for q in copies)
        assert written == answer * 2
        for q in copies:
            keys = targets[q].nonzero().flatten().tolist()
            assert keys and all(tok.decode([int(ids[k])]) == tok.decode([int(ids[q + 1])]) for k in keys)
            assert all(k < copies[0] for k in keys)  # the phrase, before the copies


def test_low_res_read_rows_are_taught_like_crop_read_on_the_first_look(encoder):
    """The trained low-res reader (benchmarks/lowres_read.py) gets crop READ's recipe: its characters
    point at their slots in the frame as first shown, with glyph labels where that grid has them."""
    _, batch = _collate(encoder, {"read_lowres": 1.0}, range(2))
    for row, index in enumerate(range(2)):
        example = make_example("read_lowres", WORLD, VISION, 0, TRAIN_STREAM, index)
        assert example.task == "read_lowres" and example.messages[-1]["content"].startswith(
            f'It reads "{example.answer}".'
        )
        assert batch["attend_read"][row].any()  # each character attends to its slots, as in crop READ
    assert pretrain_settings({"pretrain": {"tasks": {"read_lowres": 0.7, "locate": 0.3}}}).tasks[
        "read_lowres"
    ]


def test_attention_loss_is_low_only_when_the_taught_heads_look_at_their_targets():
    length = 5
    targets = {name: torch.zeros((1, length, length), dtype=torch.bool) for name in ATTENTION_HEADS}
    targets["attend_locate"][0, 3, 1] = True
    targets["attend_read"][0, 4, 2] = True
    looking = torch.full((1, 2, length, length), 1.0 / length)
    looking[0, ATTENTION_HEADS["attend_locate"], 3] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    looking[0, ATTENTION_HEADS["attend_read"], 4] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    elsewhere = torch.full((1, 2, length, length), 1.0 / length)
    assert float(attention_loss([looking], 0, targets)) < 1e-4
    assert float(attention_loss([elsewhere], 0, targets)) == pytest.approx(
        -torch.log(torch.tensor(0.2)).item(), rel=1e-4
    )
    # a layer past the model's last is read as its last
    assert float(attention_loss([elsewhere, looking], 7, targets)) < 1e-4


def test_continuation_loss_counts_only_the_labelled_tokens_next_token_shifted():
    hidden = torch.zeros((1, 4, 3))
    hidden[0, 0, 2] = 1.0  # position 0 predicts token 2, which position 1 holds
    lm_head = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lm_head.weight.copy_(torch.eye(3) * 20.0)
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]])
    assert float(continuation_loss(hidden, labels, lm_head).detach()) < 1e-3
    wrong = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX]])
    assert float(continuation_loss(hidden, wrong, lm_head).detach()) > 10


def test_task_learnability_scores_the_boxed_answer_apart_and_pairs_only_the_same_renders(tmp_path):
    """benchmarks/task_learnability.py: a right reading copied wrong into \\boxed{} is read but not
    answered; --pair-with gives this run minus the other per render, and refuses other renders."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "task_learnability.py"
    spec = importlib.util.spec_from_file_location("task_learnability", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def row(index, answer, reading, copy, correct):
        predicted = f'It reads "{reading}". So the answer is "{copy}".\n\\boxed{{{copy}}}'
        return {"task": "read", "index": index, "answer": answer, "predicted": predicted, "correct": correct}

    mine = [row(0, "379", "379", "379", True), row(1, "917", "917", "917", True)]
    theirs = [row(0, "379", "379", "779", True), row(1, "917", "517", "511", False)]
    assert bench.answer_correct(theirs) == [False, False] and bench.answer_correct(mine) == [True, True]
    report = tmp_path / "held_out.jsonl"
    report.write_text("".join(json.dumps(r) + "\n" for r in theirs))
    paired = bench.paired_with(mine, report)
    assert paired["read_acc"]["difference"] == 0.5 and paired["read_answer_acc"]["difference"] == 1.0
    assert paired["read_answer_acc"]["n"] == 2
    report.write_text(json.dumps(row(0, "111", "111", "111", True)) + "\n")
    with pytest.raises(SystemExit, match="not this run's"):
        bench.paired_with(mine, report)


def test_locate_errors_tells_a_box_at_another_text_from_one_that_covers():
    """benchmarks/locate_errors.py draws each held-out LOCATE scene again from its index and files the
    box: covering the asked text, at another text, or none; a report of another world is refused."""
    import importlib.util
    from pathlib import Path

    from videor4.data.perception import HELD_OUT_STREAM, example_scene
    from videor4.data.synthetic import synthetic_config
    from videor4.rumination.protocol import box_text, locate_phrase, outward_box
    from videor4.rumination.tools import vision_config

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "locate_errors.py"
    spec = importlib.util.spec_from_file_location("locate_errors", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    params = bench.changed_params({})
    world, vision = synthetic_config(params), vision_config(params)
    seed = bench.pretrain_settings(params).seed
    rows = []
    for index in range(12):
        scene, target, _ = example_scene("locate", world, seed, HELD_OUT_STREAM, index)
        said = box_text(outward_box(target.box, vision.box_step))
        others = [t for t in scene.texts if t is not target]
        if not rows:  # the box as taught: it covers
            box = outward_box(target.box, vision.box_step)
        elif len(rows) == 1 and others:  # the asked panel named, another text's box written
            box = outward_box(others[0].box, vision.box_step)
        elif len(rows) == 2:
            rows.append({"task": "locate", "index": index, "answer": said, "predicted": "I cannot tell."})
            continue
        else:
            continue
        rows.append(
            {"task": "locate", "index": index, "answer": said, "predicted": locate_phrase(target.panel, box)}
        )
    assert len(rows) == 3
    result = bench.classify(rows, params)
    assert [result[k]["count"] for k in ("covers", "at_another_text", "no_box", "near_miss")] == [1, 1, 1, 0]
    assert result["named_right"] == 2 / 3 and result["view"] == [84, 56]
    rows[0]["answer"] = "[0.0, 0.0, 1.0, 1.0]"
    with pytest.raises(SystemExit, match="not this world's"):
        bench.classify(rows, params)
