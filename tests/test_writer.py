"""The model writer of thoughts (`data.cot.writer: model`): prompts, checks, caching, fallbacks."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest

from videor4.data.writer import (
    REASONS,
    WriterConfig,
    cache_key,
    cached_text,
    check_thought,
    rewrite_thoughts,
    writer_prompt,
)
from videor4.policy.writer import ModelThoughtWriter
from videor4.rumination.protocol import ToolCall
from videor4.rumination.trajectory import Step, Trajectory

QUESTION_MC = (
    "How many different codes appear on the blue license plate during the video?\n"
    "Options:\n(A) 4\n(B) 2\n(C) 5\n(D) 3"
)


def _traj(
    traj_id: str,
    kind: str,
    steps: list[Step],
    final_thought: str,
    final_answer: str,
    question: str,
    answers: list[str],
    options: list[str] | None = None,
) -> Trajectory:
    return Trajectory(
        traj_id=traj_id,
        sample_id=f"s-{traj_id}",
        kind=kind,
        video="video.mp4",
        frame_indices=[0, 3, 6, 9, 12, 15, 18, 21],
        num_source_frames=24,
        question=question,
        answers=answers,
        problem_type="multiple_choice" if options else "open",
        options=options,
        vision={},
        steps=steps,
        final_thought=final_thought,
        final_answer=final_answer,
    )


def _step(thought: str, call: ToolCall, obs: str) -> Step:
    return Step(thought, call, obs, images=[], image_sha256=["0" * 64])


def crp_trajectory() -> Trajectory:
    """Clip frames 1 and 4 (images 9, 10), crop each, answer a count question (multiple choice)."""
    box = [0.1, 0.1, 0.4, 0.3]
    return _traj(
        "crp-000001",
        "crp",
        [
            _step(
                "I need a closer look at frames 1, 4.",
                ToolCall("clipping", {"target_frames": [1, 4]}),
                "Here are the selected frames 1, 4 at higher resolution (images 9 to 10):",
            ),
            _step(
                "The blue license plate is at [0.1, 0.1, 0.4, 0.3]. Let me zoom in.",
                ToolCall("cropping", {"target_image": 9, "bbox_2d": list(box)}),
                "Here is the cropped region (224x112) (image 11):",
            ),
            _step(
                'It reads "011". The blue license plate is at [0.1, 0.1, 0.4, 0.3]. Let me zoom in.',
                ToolCall("cropping", {"target_image": 10, "bbox_2d": list(box)}),
                "Here is the cropped region (224x112) (image 12):",
            ),
        ],
        'It reads "211". The codes are 011, 211: 2 different. That is option (B).',
        "B",
        QUESTION_MC,
        ["B"],
        ["4", "2", "5", "3"],
    )


def clip_trajectory() -> Trajectory:
    """Clip frame 2, read the code there (open question)."""
    return _traj(
        "drp-000002",
        "drp_clip",
        [
            _step(
                "I need a closer look at frame 2.",
                ToolCall("clipping", {"target_frames": [2]}),
                "Here is the selected frame 2 at higher resolution (image 9):",
            )
        ],
        'It reads "553". So the answer is "553".',
        "553",
        "What code appears in the orange caption bar?",
        ["553"],
    )


def miss_trajectory() -> Trajectory:
    """Crop a wrong region first, then the right one (open question)."""
    return _traj(
        "crp-000003",
        "crp",
        [
            _step(
                "The text may be at [0.7, 0.5, 1.0, 0.7]. Let me zoom in.",
                ToolCall("cropping", {"target_image": 3, "bbox_2d": [0.7, 0.5, 1.0, 0.7]}),
                "Here is the cropped region (168x112) (image 9):",
            ),
            _step(
                'That is "956", not the text I need. '
                "The green price tag is at [0.2, 0.5, 0.5, 0.8]. Let me zoom in.",
                ToolCall("cropping", {"target_image": 3, "bbox_2d": [0.2, 0.5, 0.5, 0.8]}),
                "Here is the cropped region (224x140) (image 10):",
            ),
        ],
        'It reads "460". So the answer is "460".',
        "460",
        "What price is shown on the green price tag?",
        ["460"],
    )


def all_trajectories() -> list[Trajectory]:
    return [crp_trajectory(), clip_trajectory(), miss_trajectory()]


def thoughts(traj: Trajectory) -> list[str]:
    return [s.thought for s in traj.steps] + [traj.final_thought]


def plan(traj: Trajectory) -> dict:
    """Everything but the thoughts: what the writer must never change."""
    d = traj.to_dict()
    for s in d["steps"]:
        s.pop("thought")
    d.pop("final_thought")
    return d


# ---------------------------------------------------------------- check_thought
def test_the_synthesizer_s_template_thoughts_pass_every_check():
    for traj in all_trajectories():
        for k, thought in enumerate(thoughts(traj)):
            assert check_thought(thought, traj, k) is None, (traj.traj_id, k, thought)


@pytest.mark.parametrize(
    "step, thought, reason",
    [
        (0, "   ", "empty"),
        (0, "I look closer. " * 30, "too_long"),
        (
            0,
            'Let me look. <tool_call>{"name": "clipping", "arguments": {"target_frames": [1]}}</tool_call>',
            "format",
        ),
        (3, "The codes differ, so it is \\boxed{B}.", "format"),
        (0, "I need frames 1 and 4 <|im_end|>.", "format"),
        (1, "The blue license plate is at [0.1, 0.1, 0.4, 0.3] and I", "unfinished"),
        (0, "The plate may be in frame 9, so I look closer.", "wrong_frame"),  # only frames 1-8 exist
        (0, "I need a closer look at frames 2 and 3.", "wrong_frame"),  # the call clips 1 and 4
        (0, "I need a closer look at frames 1 to 5.", "wrong_frame"),
        (
            1,
            "In frame 4 the blue license plate is at [0.1, 0.1, 0.4, 0.3].",
            "wrong_frame",
        ),  # image 9 is frame 1
        (0, "I want frames 1 and 4, which will be image 12.", "wrong_image"),  # not seen yet
        (2, 'It reads "011". Now image 9 at [0.1, 0.1, 0.4, 0.3].', "wrong_image"),  # the call crops image 10
        (1, "The blue license plate is at [0.2, 0.1, 0.4, 0.3]. Let me zoom in.", "wrong_box"),
        (0, "The plate is at [0.1, 0.1, 0.4, 0.3] in frames 1 and 4.", "wrong_box"),  # a clip step has no box
        (1, "The blue license plate is in the upper left of frame 1. Let me zoom in.", "missing_box"),
        (2, "Now the plate in frame 4 at [0.1, 0.1, 0.4, 0.3].", "missing_reading"),  # "011" was read
        (3, 'It reads "211", so 2 codes and the answer is (C).', "wrong_answer"),
        (3, 'It reads "211"; with "011" there are 2 codes, option (A).', "wrong_answer"),
        (
            3,
            'It reads "211"; the codes 011, 211 and 7734 make option (B).',
            "wrong_answer",
        ),  # 7734 was never read
    ],
)
def test_check_thought_names_the_broken_rule(step, thought, reason):
    assert reason in REASONS
    assert check_thought(thought, crp_trajectory(), step) == reason


@pytest.mark.parametrize(
    "step, thought",
    [
        (0, "The plate could be anywhere, so I want frames 1 and 4 at higher resolution."),
        (
            1,
            "In frame 1 (image 9) the blue license plate should be at [0.1, 0.1, 0.4, 0.3], so I zoom there.",
        ),
        (2, 'The first plate reads "011"; the second view, image 10, has it at [0.1, 0.1, 0.4, 0.3].'),
        (3, 'The last plate reads "211", so with "011" there are 2 different codes: option (B).'),
    ],
)
def test_a_faithful_thought_is_accepted(step, thought):
    assert check_thought(thought, crp_trajectory(), step) is None


def test_a_final_thought_must_name_the_final_answer_of_an_open_question():
    traj = clip_trajectory()
    assert check_thought('Frame 2 shows "553", so the answer is 553.', traj, 1) is None
    assert check_thought('Frame 2 shows "553", so the answer is 535.', traj, 1) == "wrong_answer"
    assert check_thought('Frame 2 shows "553", but 8812 is clearer.', traj, 1) == "wrong_answer"
    assert check_thought("Frame 2 shows the code, so I know it.", traj, 1) == "missing_reading"


def test_the_prompt_gives_the_situation_and_the_next_action_but_no_markup():
    traj = crp_trajectory()
    system, user = writer_prompt(traj, 2)
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert traj.question in text
    assert "shown 8 frames" in text
    assert (
        "Here are the selected frames 1, 4 at higher resolution (images 9 to 10):" in text
    )  # earlier observations
    assert '"011"' in text  # the evidence this thought reports
    assert "image 10" in text and "[0.1, 0.1, 0.4, 0.3]" in text  # the crop it leads to
    assert "<tool_call>" not in text and "\\boxed" not in text
    final = writer_prompt(traj, 3)[1]["content"]
    assert "final answer: B (option B: 2)" in final and '"211"' in final
    miss = writer_prompt(miss_trajectory(), 1)[1]["content"]
    assert '"956" (not the text the question asks about)' in miss
    assert writer_prompt(traj, 2) == writer_prompt(crp_trajectory(), 2)  # deterministic: a stable cache key


# ---------------------------------------------------------------- rewriting with a writer
class FixedWriter:
    """A test double for the validation and counting logic: the same sentence for every prompt."""

    writer_id = "fixed-sentence"

    def __init__(self, sentence: str):
        self.sentence = sentence
        self.prompts: list[list[dict]] = []

    def write(self, prompts):
        self.prompts += prompts
        return [self.sentence] * len(prompts)


SENTENCE = 'Frame 2 shows "553", so the answer is 553.'  # right for clip_trajectory, wrong elsewhere


def test_valid_thoughts_replace_the_template_and_invalid_ones_fall_back(tmp_path):
    trajs = [clip_trajectory(), crp_trajectory()]
    before = copy.deepcopy([t.to_dict() for t in trajs])
    cfg = WriterConfig(name_or_path="unused", batch_size=3, cache_dir=str(tmp_path / "cache"))
    writer = FixedWriter(SENTENCE)
    out, counts = rewrite_thoughts(trajs, writer, cfg)

    assert [t.to_dict() for t in trajs] == before  # inputs untouched
    assert out[0] is not trajs[0]
    assert thoughts(out[0]) == [SENTENCE, SENTENCE]  # accepted for both thoughts of the clip trajectory
    assert thoughts(out[1]) == thoughts(trajs[1])  # every crp thought rejected: the templates stay
    assert [plan(t) for t in out] == [plan(t) for t in trajs]
    # crp: clip step (frame 2 not clipped), crop steps (frame 2 not cropped), final ("211" not said)
    assert counts == Counter(model=2, template=4, rejected_wrong_frame=3, rejected_missing_reading=1)
    assert len(writer.prompts) == 6


def test_the_cache_makes_a_rerun_generate_nothing_and_resumes_a_partial_run(tmp_path):
    cfg = WriterConfig(name_or_path="unused", batch_size=2, cache_dir=str(tmp_path / "cache"))
    first = FixedWriter(SENTENCE)
    rewrite_thoughts([clip_trajectory()], first, cfg)  # an "interrupted" run: one trajectory done
    assert len(first.prompts) == 2

    resumed = FixedWriter(SENTENCE)
    out, counts = rewrite_thoughts(all_trajectories(), resumed, cfg)
    assert len(resumed.prompts) == 4 + 3  # only the thoughts not cached yet
    assert sum(counts[k] for k in ("model", "template")) == 2 + 4 + 3

    again = FixedWriter(SENTENCE)
    out2, counts2 = rewrite_thoughts(all_trajectories(), again, cfg)
    assert again.prompts == [] and counts2 == counts
    assert [t.to_dict() for t in out2] == [t.to_dict() for t in out]
    # one JSON file per prompt, holding the generated text
    files = sorted(Path(cfg.cache_dir).rglob("*.json"))
    assert len(files) == 9 and all(json.loads(f.read_text())["text"] == SENTENCE for f in files)


def test_a_policy_rollout_is_not_rewritten():
    traj = clip_trajectory()
    traj.kind = "rollout"
    with pytest.raises(ValueError, match="rollout"):
        rewrite_thoughts([traj], FixedWriter(SENTENCE), WriterConfig(name_or_path="unused"))


# ---------------------------------------------------------------- a real model as the writer
@pytest.fixture(scope="module")
def tiny_writer_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint
    (the project's builder, tokenizer trained on these trajectories)."""
    from conftest import TINY_SPEC
    from videor4.core.io import write_jsonl
    from videor4.policy.model import TinySpec, build_tiny_checkpoint

    root = tmp_path_factory.mktemp("writer")
    corpus = root / "trajectories.jsonl"
    write_jsonl(corpus, [t.to_dict() for t in all_trajectories()])
    build_tiny_checkpoint(TinySpec(**TINY_SPEC), [corpus], root / "tiny")
    return root / "tiny"


def test_a_tiny_random_model_writes_thoughts_that_are_checked_counted_and_cached(tiny_writer_dir, tmp_path):
    trajs = all_trajectories()
    before = copy.deepcopy([t.to_dict() for t in trajs])
    n_thoughts = sum(len(t.steps) + 1 for t in trajs)
    cfg = WriterConfig(
        name_or_path=str(tiny_writer_dir), max_new_tokens=16, batch_size=4, cache_dir=str(tmp_path / "cache")
    )
    writer = ModelThoughtWriter(cfg)
    out, counts = rewrite_thoughts(trajs, writer, cfg)

    assert (
        writer.loaded and writer.calls == 3 and writer.generated == n_thoughts
    )  # batches of 4 over 9 prompts
    assert counts["model"] + counts["template"] == n_thoughts
    rejected = {k: v for k, v in counts.items() if k.startswith("rejected_")}
    assert counts["template"] >= 1 and sum(rejected.values()) == counts["template"]
    assert all(k.removeprefix("rejected_") in REASONS for k in rejected)
    for traj, new in zip(trajs, out):
        assert plan(new) == plan(traj)  # calls, observations, images and answers stay the plan's
        for k, (old_thought, thought) in enumerate(zip(thoughts(traj), thoughts(new))):
            generated = cached_text(cfg.cache_dir, cache_key(writer.writer_id, writer_prompt(traj, k)))
            assert generated is not None
            assert thought in (old_thought, " ".join(generated.split()))
    assert [t.to_dict() for t in trajs] == before

    rerun = ModelThoughtWriter(cfg)
    out2, counts2 = rewrite_thoughts(all_trajectories(), rerun, cfg)
    assert rerun.calls == 0 and not rerun.loaded  # all cached: the model is not even loaded
    assert counts2 == counts
    assert [t.to_dict() for t in out2] == [t.to_dict() for t in out]


def test_sampling_is_seeded_so_two_fresh_writers_write_the_same_texts(tiny_writer_dir):
    cfg = WriterConfig(
        name_or_path=str(tiny_writer_dir), max_new_tokens=16, temperature=1.0, batch_size=4, seed=3
    )
    prompts = [writer_prompt(t, k) for t in all_trajectories() for k in range(len(t.steps) + 1)]
    first, second = ModelThoughtWriter(cfg), ModelThoughtWriter(cfg)
    texts = first.write(prompts)
    assert texts == second.write(prompts) and any(t.strip() for t in texts)
    assert (
        first.writer_id
        == second.writer_id
        != ModelThoughtWriter(WriterConfig(name_or_path=str(tiny_writer_dir))).writer_id
    )
    _, counts = rewrite_thoughts(all_trajectories(), first, cfg)  # no cache: generated again, same seed
    assert counts["model"] + counts["template"] == len(prompts) and counts["template"] >= 1


def test_a_text_only_causal_lm_writes_through_the_generic_loader(tiny_writer_dir, tmp_path):
    """Any HF chat model: a tiny Qwen2 causal LM (no vision tower) saved with the same tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_writer_dir)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")

    cfg = WriterConfig(name_or_path=str(tmp_path / "lm"), max_new_tokens=8, batch_size=8)
    writer = ModelThoughtWriter(cfg)
    out, counts = rewrite_thoughts(all_trajectories(), writer, cfg)
    assert type(writer._model).__name__ == "Qwen2ForCausalLM" and writer.calls == 2
    assert counts["model"] + counts["template"] == 9
    assert [plan(t) for t in out] == [plan(t) for t in all_trajectories()]


def test_the_build_with_a_model_writer_counts_model_and_template_thoughts(
    small_built, tiny_writer_dir, tmp_path
):
    """`data.cot.writer: model` through the data build, with the tiny policy as the writer: every
    thought is counted as the model's or the template's, and the tool calls and answers are the plan's."""
    import copy

    from conftest import SMALL_PARAMS
    from videor4.core.io import read_jsonl
    from videor4.data.build import (
        build_config,
        build_datasets,
        data_params,
        load_synthetic_source,
        validate_dataset,
    )
    from videor4.policy.writer import thought_writer

    params = copy.deepcopy(SMALL_PARAMS)
    params["data"]["cot"] = {
        "writer": "model",
        "model": str(tiny_writer_dir),
        "max_new_tokens": 8,
        "cache_dir": str(tmp_path / "cot"),
    }
    cfg = build_config(params, tmp_path / "built")
    cfg.ocr_cache_dir = tmp_path / "ocr"
    writer = thought_writer(data_params(params), cfg.cot)
    metrics = build_datasets(
        load_synthetic_source(small_built.parent / "synthetic"), cfg, validate=validate_dataset, writer=writer
    )
    before = read_jsonl(small_built / "sft_drp.jsonl") + read_jsonl(small_built / "sft_crp.jsonl")
    after = read_jsonl(tmp_path / "built" / "sft_drp.jsonl") + read_jsonl(
        tmp_path / "built" / "sft_crp.jsonl"
    )
    n_thoughts = sum(len(t["steps"]) + 1 for t in after)
    thoughts = metrics["thoughts"]
    assert thoughts["model"] + thoughts["template"] == n_thoughts and writer.generated > 0
    assert sum(v for k, v in thoughts.items() if k.startswith("rejected_")) == thoughts["template"]
    assert [(t["traj_id"], t["final_answer"], [s["tool_call"] for s in t["steps"]]) for t in after] == [
        (t["traj_id"], t["final_answer"], [s["tool_call"] for s in t["steps"]]) for t in before
    ]
