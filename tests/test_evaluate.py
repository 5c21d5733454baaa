"""Evaluation: eval-set loading in every supported layout, the tool budget, scoring and the table,
on a real tiny policy and real videos and page images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import SMALL_PARAMS
from videor4.core.scoring import score_answer
from videor4.data.sources.mcvqa import load_mcvqa
from videor4.evaluation.evaluate import (
    BEST_VS_DIRECT,
    CHOSEN_ON_VAL,
    CheckpointResult,
    EvalDataError,
    EvalSet,
    EvalSettings,
    answer_all,
    curriculum_inits,
    eval_metrics,
    eval_settings,
    evaluate_checkpoint,
    headline_metrics,
    load_eval_sets,
    paired_comparisons,
    paper_table,
    scaling_rows,
    summarize,
    tracked_numbers,
)
from videor4.policy.encoding import PolicyEncoder
from videor4.policy.model import load_policy
from videor4.policy.rollout import RolloutEngine, RolloutSettings, start_group
from videor4.rumination.protocol import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from videor4.rumination.tools import VisionConfig

VISION = VisionConfig.from_dict(SMALL_PARAMS["vision"])
CLIP = 'Look.\n<tool_call>\n{"name": "clipping", "arguments": {"target_frames": [1, 2]}}\n</tool_call>'


# ---------------------------------------------------------------- eval sets on disk
def _m4(root: Path, video: Path) -> None:
    (root / "videos").mkdir(parents=True)
    shutil.copy(video, root / "videos" / "00001.mp4")
    item = {
        "question": "What does the sign say?",
        "video_id": "00001",
        "video_width": 320,
        "video_height": 192,
        "source1": "Single frame",
        "source2": "Text",
    }
    data = [
        {**item, "question_id": 1, "answers": ["stop"]},
        {**item, "question_id": 2, "answers": ["go", "go on"]},
        {**item, "question_id": 3},
    ]  # a hidden test answer: counted, not scored
    (root / "ViteVQA_0.0.2_t1s1test.json").write_text(json.dumps({"dataset_name": "vtvqa", "data": data}))


def _pages(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (80, 100), (40 * i, 90, 200)).save(root / "images" / f"d1_p{i}.png")
    data = [
        {
            "questionId": 7,
            "question": "What is the total?",
            "doc_id": "d1",
            "page_ids": ["d1_p0", "d1_p1"],
            "answers": ["12"],
        }
    ]
    (root / "val.json").write_text(json.dumps({"dataset_split": "val", "data": data}))


def _mc(root: Path, video: Path) -> None:
    (root / "videos").mkdir(parents=True)
    shutil.copy(video, root / "videos" / "clip1.mp4")
    items = [
        {
            "video": "clip1.mp4",
            "question": "Which colour moves?",
            "candidates": ["red", "white", "blue"],
            "answer": "white",
        },  # MVBench
        {
            "videoID": "clip1",
            "question_id": "q2",
            "question": "What moves?",
            "options": ["A. a bar", "B. a car"],
            "answer": "A",
        },  # Video-MME
        {"video": "clip1.mp4", "question": "Bad", "options": ["x", "y"], "answer": "Z"},  # not an option
        {"video": "nowhere.mp4", "question": "Missing", "options": ["x", "y"], "answer": "B"},
        {"video": "clip1.mp4", "question": "One option", "options": ["x"], "answer": "A"},
    ]
    (root / "mc.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory, sample_video) -> Path:
    root = tmp_path_factory.mktemp("evalsets")
    _m4(root / "m4", sample_video)
    _pages(root / "docs")
    _mc(root / "mc", sample_video)
    return root


def _settings(root: Path, **kw) -> EvalSettings:
    sets = {
        "m4vitevqa": {"root": str(root / "m4"), "files": {"t1s1": "ViteVQA_0.0.2_t1s1test.json"}},
        "mpdocvqa": {"root": str(root / "docs"), "split_file": "val.json"},
        "slidesvqa": {"root": None, "split_file": "test.jsonl"},  # absent: not evaluated
        "mcvqa": {"mvbench": {"root": str(root / "mc"), "annotation_file": "mc.jsonl", "title": "MVBench"}},
    }
    return EvalSettings(**{"max_steps": 1, "max_new_tokens": 8, "batch_size": 4, "sets": sets, **kw})


def test_multiple_choice_loader_reads_each_layout_and_counts_bad_items(eval_root):
    samples, skipped = load_mcvqa(eval_root / "mc", "mc.jsonl", dataset="mvbench")
    assert [s.answers for s in samples] == [["B"], ["A"]]  # answer text → its letter; a letter stays
    assert samples[1].options == ["a bar", "a car"] and samples[1].sample_id == "mvbench-q2"
    assert all(Path(s.video).is_file() and s.problem_type == "multiple_choice" for s in samples)
    assert skipped == {"malformed_item:answer": 1, "missing_video": 1, "malformed_item:options": 1}
    as_list = eval_root / "mc" / "list.json"
    as_list.write_text(
        json.dumps(
            {"data": [json.loads(line) for line in (eval_root / "mc" / "mc.jsonl").read_text().splitlines()]}
        )
    )
    assert len(load_mcvqa(eval_root / "mc", as_list)[0]) == 2
    with pytest.raises(ValueError, match="not found"):
        load_mcvqa(eval_root / "mc", "nope.json")
    (eval_root / "mc" / "broken.json").write_text("{oops\n")
    with pytest.raises(ValueError, match="broken.json: line 1"):
        load_mcvqa(eval_root / "mc", "broken.json")


def test_eval_sets_are_loaded_when_present_and_refused_clearly_when_broken(eval_root, small_built):
    sets = load_eval_sets(_settings(eval_root), small_built / "samples_test.jsonl")
    assert [s.name for s in sets] == ["synthetic", "m4_t1s1", "mpdocvqa", "mvbench"]
    m4 = sets[1]
    assert len(m4.rows) == 2 and m4.skipped == {"no_answers": 1} and Path(m4.rows[0]["video"]).is_file()
    assert all(Path(p).is_file() for p in sets[2].rows[0]["meta"]["pages"])
    assert len(load_eval_sets(_settings(eval_root, max_questions=1), None)[0].rows) == 1
    bad = _settings(eval_root)
    bad.sets["mpdocvqa"]["root"] = str(eval_root / "missing")
    with pytest.raises(EvalDataError, match="eval.sets.mpdocvqa.root does not exist"):
        load_eval_sets(bad, None)
    with pytest.raises(EvalDataError, match="unknown eval.sets: vqa2"):
        load_eval_sets(EvalSettings(sets={"vqa2": {}}), None)
    broken = _settings(eval_root)
    broken.sets["m4vitevqa"]["files"] = {"t2": "missing.json"}
    with pytest.raises(EvalDataError, match="missing.json"):
        load_eval_sets(broken, None)


@pytest.fixture(scope="module")
def policy(tiny_dir):
    torch.manual_seed(0)
    return load_policy(tiny_dir)


def _always_calls_tools(policy):
    """The same policy with the `</tool_call>` logit raised far above the rest (a real, biased head):
    every turn it writes is a (malformed) tool call, which counts against the budget."""
    model = policy.model
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    biased.bias.data.zero_()
    biased.bias.data[policy.tokenizer.convert_tokens_to_ids(TOOL_CALL_CLOSE)] = 1e4
    model.lm_head = biased
    return head


def test_a_spent_budget_bans_the_tool_call_tokens(policy, small_built):
    rows = [json.loads(x) for x in (small_built / "samples_test.jsonl").read_text().splitlines()][:2]
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    call_tokens = {policy.tokenizer.convert_tokens_to_ids(t) for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)}
    original = _always_calls_tools(policy)
    try:

        def run(**kw):
            eng = RolloutEngine(
                policy.model, encoder, RolloutSettings(max_new_tokens=6, temperature=0.0, **kw)
            )
            rollouts = [r for i, row in enumerate(rows) for r in start_group(eng, row, VISION, 1, i)]
            for r in rollouts:
                if kw.get("max_tool_calls"):
                    eng.force_turn(r, CLIP)  # spend the budget of one call
            return eng.run(rollouts)

        generated = lambda r: [t for t, m in zip(r.input_ids, r.completion_mask) if m]  # noqa: E731
        free = run(max_tool_calls=0)  # training semantics: a call past the budget ends the rollout unanswered
        assert all(call_tokens & set(generated(r)) and r.finish_reason == "max_tool_calls" for r in free)
        for budget in (0, 1):
            banned = run(max_tool_calls=budget, force_answer=True)
            assert all(not call_tokens & set(generated(r)) and r.num_generated > 0 for r in banned)
            assert all(len(r.ops) == budget and r.finish_reason != "max_tool_calls" for r in banned)
    finally:
        policy.model.lm_head = original


def test_checkpoint_evaluation_scores_every_set_and_mode(tiny_dir, eval_root, small_built):
    settings = _settings(eval_root)
    sets = load_eval_sets(settings, small_built / "samples_test.jsonl")
    result = evaluate_checkpoint("base", tiny_dir, sets, VISION, settings, max_images=16)
    for s in sets:
        summary = result.summaries[s.name]
        assert summary["questions"] == len(s.rows)
        assert [p["steps"] for p in summary["scaling"]] == [0, 1]
        single, rumination = (result.predictions[s.name][m] for m in ("single_pass", "rumination"))
        assert all(r["calls"] == 0 for r in single) and all(r["calls"] <= 1 for r in rumination)
        for rec, row in zip(rumination, s.rows):  # each score is the metric of that prediction
            n = len(row.get("options") or []) or 4
            assert {k: rec[k] for k in ("acc", "anls")} == score_answer(
                rec["prediction"], row["answers"], row["problem_type"], n
            )
        assert summary["rumination"]["acc"] == pytest.approx(
            sum(r["acc"] for r in rumination) / len(rumination)
        )
        lo, hi = summary["rumination"]["acc_ci"]
        assert (
            summary["rumination"]["n"] == len(s.rows)
            and 0.0 <= lo <= summary["rumination"]["acc"] <= hi <= 1.0
        )
    metrics = eval_metrics([result], sets, 1)
    assert metrics["questions"] == {"synthetic": len(sets[0].rows), "m4_t1s1": 2, "mpdocvqa": 1, "mvbench": 2}
    assert metrics["skipped"]["m4_t1s1"] == 1
    table = paper_table([result], sets, 1)
    n = len(sets[0].rows)
    assert (
        f"| Checkpoint | Mode | Synthetic Acc (n={n}) | Synthetic ANLS (n={n}) | "
        "M4-ViteVQA T1-S1 Acc (n=2) | "
        "M4-ViteVQA T1-S1 ANLS (n=2) | MP-DocVQA Acc (n=1)"
    ) in table
    assert "| base | single-pass |" in table and "| base | rumination |" in table and "MVBench ANLS" in table
    assert scaling_rows([result], "synthetic")[0] == {
        "steps": 0,
        "base": result.summaries["synthetic"]["single_pass"]["acc"],
    }


def test_the_budget_sweep_reuses_exactly_the_rollouts_a_smaller_budget_would_give(policy, small_built):
    """Records at budget 0 from the sweep (reused or re-decoded) equal a direct run at budget 0."""
    from videor4.evaluation.evaluate import sweep_budgets

    rows = [json.loads(x) for x in (small_built / "samples_test.jsonl").read_text().splitlines()][:3]
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    settings = EvalSettings(max_steps=1, max_new_tokens=8, batch_size=4)
    original = _always_calls_tools(policy)
    try:  # every question calls a tool under budget 1, so budget 0 must be decoded again
        runs = sweep_budgets(policy.model, encoder, rows, VISION, settings, 16)
        direct = answer_all(policy.model, encoder, rows, VISION, settings, 0, 16)
    finally:
        policy.model.lm_head = original
    assert all(r["calls"] == 1 for r in runs[1])
    assert [(r["prediction"], r["trajectory"]) for r in runs[0]] == [
        (r["prediction"], r["trajectory"]) for r in direct
    ]
    assert summarize(runs)["tools"]["questions_using_tools"] == 1.0


# ---------------------------------------------------------------- statistics in the reports
def _records(accs, order=None, answered=True):
    order = order or range(len(accs))
    return [
        {
            "sample_id": f"q{i}",
            "prediction": "x" if answered else None,  # None: the rollout ended unanswered
            "acc": float(accs[i]),
            "anls": 0.9 * accs[i],
            "calls": 0,
            "clip_calls": 0,
            "crop_calls": 0,
            "invalid_calls": 0,
            "finish_reason": "answer",
        }
        for i in order
    ]


def _result(name, single, rumination, rows, set_name="synth", single_answered=True):
    runs = {0: _records(single, answered=single_answered), 1: _records(rumination)}
    return CheckpointResult(
        name,
        {set_name: summarize(runs, rows, 500)},
        {set_name: {"single_pass": runs[0], "rumination": runs[1]}},
        0.0,
    )


def test_reports_carry_intervals_the_kind_breakdown_and_paired_comparisons():
    rows = [{"sample_id": f"q{i}", "question_kind": ("read", "count")[i % 2]} for i in range(40)]
    wrong, mostly = [0] * 40, [1] * 30 + [0] * 10
    results = [
        _result("base", wrong, wrong, rows),
        _result("drp_sft", wrong, mostly, rows),
    ]  # rl_d... not evaluated
    sets = [EvalSet("synth", "Synth", rows)]
    drp = results[1].summaries["synth"]
    assert (
        drp["rumination"]["acc"] == 0.75
        and drp["rumination"]["n"] == 40
        and drp["single_pass"]["anls_ci"] == drp["single_pass"]["acc_ci"]
    )  # 0/40: Wilson, not a zero-width bootstrap
    assert drp["rumination"]["acc_ci"][0] < 0.75 < drp["rumination"]["acc_ci"][1]
    assert [p["steps"] for p in drp["scaling"]] == [0, 1] and drp["scaling"][1]["acc_ci"] == drp[
        "rumination"
    ]["acc_ci"]
    kinds = drp["by_kind"]
    assert (
        set(kinds) == {"read", "count"}
        and kinds["read"]["rumination"]["n"] == 20
        and kinds["read"]["rumination"]["acc"] == 0.75
    )

    inits = curriculum_inits({})
    assert inits == {
        "pretrain": "base",
        "direct_sft": "pretrain",
        "drp_sft": "pretrain",
        "rl_d": "drp_sft",
        "crp_sft": "rl_d",
        "rl_c": "crp_sft",
    }
    assert curriculum_inits({"curriculum": {"crp_sft_init": "models/drp_sft"}})["crp_sft"] == "drp_sft"
    inits["drp_sft"] = (
        "base"  # this test's two checkpoints: drp_sft paired with base, the checkpoint it starts from here
    )
    comparisons = paired_comparisons(results, sets, inits, resamples=500)
    c = comparisons["synth"]
    assert set(c["rumination_vs_single_pass"]) == {"base", "drp_sft"} and set(c["stage_vs_init"]) == {
        "drp_sft_vs_base"
    }
    gain = c["rumination_vs_single_pass"]["drp_sft"]["acc"]
    assert (
        gain["diff"] == pytest.approx(0.75) and gain["ci"][0] > 0 and gain["significant"] and gain["n"] == 40
    )
    assert c["rumination_vs_single_pass"]["base"]["acc"] == {
        "diff": 0.0,
        "ci": [0.0, 0.0],
        "p": 1.0,
        "n": 40,
        "significant": False,
    }
    assert not c["stage_vs_init"]["drp_sft_vs_base"]["single_pass"]["anls"]["significant"]
    assert c["stage_vs_init"]["drp_sft_vs_base"]["rumination"]["anls"]["diff"] == pytest.approx(0.675)

    metrics = eval_metrics(results, sets, 1, comparisons)
    assert (
        metrics["synth"]["drp_sft"]["rumination"] == drp["rumination"]
        and "by_kind" in metrics["synth"]["drp_sft"]
    )
    assert metrics["comparisons"] == comparisons
    numbers = tracked_numbers(metrics)
    assert numbers["synth.drp_sft.rumination.acc"] == 0.75
    assert numbers["synth.drp_sft.rumination.acc_ci_low"] == drp["rumination"]["acc_ci"][0]
    assert (
        numbers["comparisons.synth.stage_vs_init.drp_sft_vs_base.rumination.acc.ci_high"]
        == c["stage_vs_init"]["drp_sft_vs_base"]["rumination"]["acc"]["ci"][1]
    )
    assert "synth.drp_sft.by_kind.count.rumination.acc" in numbers and all(
        isinstance(v, float) for v in numbers.values()
    )
    assert not any(k.endswith((".significant", ".scaling")) for k in numbers)

    table = paper_table(results, sets, 1, comparisons=comparisons)
    assert "| Checkpoint | Mode | Synth Acc (n=40) | Synth ANLS (n=40) |" in table
    lo, hi = (100 * x for x in drp["rumination"]["acc_ci"])
    assert f"| drp_sft | rumination | 75.0 [{lo:.1f}, {hi:.1f}] · ans 100 % | 67.5 [" in table
    assert (
        "## Paired comparisons" in table
        and "| Set | Pair | Mode | Metric | Difference | 95 % CI | p | significant |" in table
    )
    assert "| Synth | drp_sft | rumination - single-pass | Acc | +75.0 | [" in table
    assert "| Synth | base | rumination - single-pass | Acc | +0.0 | [+0.0, +0.0] | 1.000 | no |" in table
    assert (
        "| Synth | drp_sft - base | single-pass | Acc | +0.0 |" in table
        and "| Synth | drp_sft - base | rumination | ANLS | +67.5 |" in table
    )
    assert (
        "## Accuracy (%) [95 % CI] by question kind" in table
        and "| Checkpoint | Mode | count (n=20) | read (n=20) |" in table
    )
    assert "## Paired comparisons" not in paper_table(
        results, sets, 1
    )  # without comparisons: the table as before

    shuffled = CheckpointResult(
        "drp_sft",
        results[1].summaries,
        {"synth": {"single_pass": _records(wrong, range(39, -1, -1)), "rumination": _records(mostly)}},
        0.0,
    )
    with pytest.raises(ValueError, match="not aligned by sample id"):
        paired_comparisons([results[0], shuffled], sets, inits, resamples=50)


# ---------------------------------------------------------------- against a trained single pass
def _format_rows():
    """20 multiple-choice questions (10 of 4 options, 10 of 2: chance 37.5 %), then 20 open ones."""
    options = [["a", "b", "c", "d"]] * 10 + [["a", "b"]] * 10
    mc = [{"sample_id": f"q{i}", "problem_type": "multiple_choice", "options": options[i]} for i in range(20)]
    return mc + [{"sample_id": f"q{i}", "problem_type": "open"} for i in range(20, 40)]


def _baseline_results(rows):
    """direct_sft answers every question and gets the multiple-choice half right in a single pass;
    drp_sft leaves its single pass unanswered and gets 30 of 40 ruminating; rl_d 20 of 40."""
    half, thirty, none = [1] * 20 + [0] * 20, [1] * 30 + [0] * 10, [0] * 40
    return [
        _result("base", none, none, rows),
        _result("direct_sft", half, half, rows),
        _result("drp_sft", none, thirty, rows, single_answered=False),
        _result("rl_d", none, half, rows),
    ]


def test_cells_carry_the_answered_rate_and_split_by_format_with_the_chance_line():
    rows = _format_rows()
    results, sets = _baseline_results(rows), [EvalSet("synth", "Synth", rows)]
    direct, drp = (results[i].summaries["synth"] for i in (1, 2))
    assert (direct["single_pass"]["answered"], drp["single_pass"]["answered"]) == (1.0, 0.0)
    assert drp["rumination"]["answered"] == 1.0 and drp["scaling"][0]["answered"] == 0.0
    formats = direct["by_format"]
    assert set(formats) == {"multiple_choice", "open"}
    mc, open_ = formats["multiple_choice"]["single_pass"], formats["open"]["single_pass"]
    assert (mc["acc"], mc["n"], mc["answered"], open_["acc"], open_["n"]) == (1.0, 20, 1.0, 0.0, 20)
    assert mc["acc_ci"][0] < 1.0 == mc["acc_ci"][1] and {"anls", "anls_ci"} <= set(mc)

    metrics = eval_metrics(results, sets, 1)
    assert metrics["chance_multiple_choice"] == {"synth": pytest.approx(0.375)}
    assert metrics["synth"]["drp_sft"]["by_format"] == drp["by_format"]
    assert metrics["synth"]["drp_sft"]["single_pass"]["answered"] == 0.0
    table = paper_table(results, sets, 1)
    assert "- Synth: chance on its 20 multiple-choice questions (1 / options, mean) 37.5 %" in table
    assert "| drp_sft | single-pass | 0.0 [0.0, 8.8] · ans 0 % | 0.0 [0.0, 8.8] |" in table
    assert "## Accuracy (%) [95 % CI] by problem type" in table
    assert "| Checkpoint | Mode | multiple_choice (n=20) | open (n=20) |" in table
    only_open = [{"sample_id": "q0", "problem_type": "open"}]
    assert eval_metrics([], [EvalSet("o", "O", only_open)], 1)["chance_multiple_choice"] == {"o": None}


def test_the_best_rumination_checkpoint_is_paired_against_the_direct_single_pass():
    rows = _format_rows()
    results, sets = _baseline_results(rows), [EvalSet("synth", "Synth", rows)]
    comparisons = paired_comparisons(results, sets, curriculum_inits({}), resamples=500)
    c = comparisons["synth"]
    assert list(c)[0] == BEST_VS_DIRECT and c[BEST_VS_DIRECT]["best"] == "drp_sft"
    assert c[BEST_VS_DIRECT]["chosen_by"] == "best rumination Acc on this split"
    acc = c[BEST_VS_DIRECT]["acc"]  # 30 of 40 against 20 of 40, the 20 a subset of the 30
    assert acc["diff"] == pytest.approx(0.25) and acc["n"] == 40 and acc["significant"] and acc["ci"][0] > 0
    assert "direct_sft_vs_pretrain" not in c["stage_vs_init"]  # pretrain was not evaluated here

    headline = headline_metrics(results, sets, comparisons)
    assert headline[BEST_VS_DIRECT] == {"synth": c[BEST_VS_DIRECT]}
    assert set(headline["synth"]) == {"base", "direct_sft", "drp_sft", "rl_d"}
    assert BEST_VS_DIRECT not in headline_metrics(results, sets)

    table = paper_table(results, sets, 1, comparisons=comparisons)
    section = table.split("## Paired comparisons")[1]
    first_row = next(line for line in section.splitlines() if line.startswith("| Synth |"))
    assert first_row.startswith(
        "| Synth | drp_sft (best) - direct_sft | rumination - single-pass | Acc | +25.0 |"
    )
    assert "chosen on this same split" in section

    fixed = paired_comparisons(results, sets, curriculum_inits({}), resamples=500, best="rl_d")
    pair = fixed["synth"][BEST_VS_DIRECT]  # rl_d ruminating = direct_sft's single pass, question by question
    assert (pair["best"], pair["chosen_by"], pair["acc"]["diff"], pair["acc"]["p"]) == (
        "rl_d",
        "eval.best_checkpoint",
        0.0,
        1.0,
    )
    assert "fixed by eval.best_checkpoint" in paper_table(results, sets, 1, comparisons=fixed)
    on_val = paired_comparisons(results, sets, {}, resamples=50, best="rl_d", chosen_by=CHOSEN_ON_VAL)
    assert on_val["synth"][BEST_VS_DIRECT]["chosen_by"] == CHOSEN_ON_VAL
    assert "on the val split, chosen before this split was scored" in paper_table(
        results, sets, 1, comparisons=on_val
    )
    without_direct = [r for r in results if r.name != "direct_sft"]
    assert BEST_VS_DIRECT not in paired_comparisons(without_direct, sets, {}, resamples=50)["synth"]


def test_the_best_checkpoint_param_must_name_an_evaluated_rumination_checkpoint():
    assert eval_settings({"eval": {"best_checkpoint": None}}).best_checkpoint is None
    assert "direct_sft" in eval_settings({}).checkpoints
    assert eval_settings({"eval": {"best_checkpoint": "rl_c"}}).best_checkpoint == "rl_c"
    with pytest.raises(ValueError, match=r"eval.best_checkpoint 'direct_sft' is not one of drp_sft"):
        eval_settings({"eval": {"best_checkpoint": "direct_sft"}})
    with pytest.raises(ValueError, match=r"'rl_c' is not in eval.checkpoints"):
        eval_settings({"eval": {"best_checkpoint": "rl_c", "checkpoints": ["base", "drp_sft"]}})


# ---------------------------------------------------------------- eval.split: which held-out split is scored
def test_the_split_param_is_val_or_test_and_test_by_default():
    assert eval_settings({}).split == "test"
    assert eval_settings({"eval": {"split": "val"}}).split == "val"
    for bad in ("train", "../samples_train", "val; rm -rf /"):
        with pytest.raises(ValueError, match=r"eval.split .* is not one of val, test"):
            eval_settings({"eval": {"split": bad}})


def test_a_build_folder_resolves_to_the_split_and_a_file_is_scored_as_it_is(small_built, tmp_path):
    from videor4.core.io import read_jsonl
    from videor4.evaluation.evaluate import eval_set_from_root, held_out_file
    from videor4.evaluation.stage import eval_plan

    for split in ("val", "test"):
        expected = small_built / f"samples_{split}.jsonl"
        assert held_out_file(small_built, split) == expected
        ids = [row["sample_id"] for row in read_jsonl(expected)]
        sets = load_eval_sets(EvalSettings(split=split), small_built)
        assert [s.name for s in sets] == ["synthetic"] and [r["sample_id"] for r in sets[0].rows] == ids
        picked = eval_set_from_root("synthetic", small_built, EvalSettings(split=split))
        assert [r["sample_id"] for r in picked[0].rows] == ids
        params = {**SMALL_PARAMS, "eval": {**(SMALL_PARAMS.get("eval") or {}), "split": split}}
        plan = eval_plan(params, tmp_path / "models", small_built)
        assert plan.settings.split == split and [r["sample_id"] for r in plan.sets[0].rows] == ids
    test_file = small_built / "samples_test.jsonl"  # a file is the file, whatever the split
    assert held_out_file(test_file, "val") == test_file
    val_ids = {r["sample_id"] for r in read_jsonl(small_built / "samples_val.jsonl")}
    assert not val_ids & {
        r["sample_id"] for r in load_eval_sets(EvalSettings(split="val"), test_file)[0].rows
    }
    with pytest.raises(EvalDataError, match="samples_val.jsonl"):
        held_out_file(tmp_path, "val")
    with pytest.raises(ValueError, match="eval.split 'train'"):
        held_out_file(small_built, "train")


def test_scoring_test_picks_the_headline_checkpoint_on_val_first(tiny_dir, small_built, tmp_path):
    """Test must not both choose the best rumination checkpoint and judge it: with no
    eval.best_checkpoint, the stage scores the rumination-trained checkpoints on val and picks there."""
    from videor4.core.io import read_jsonl
    from videor4.evaluation.stage import choose_best, eval_plan

    models = tmp_path / "models"
    models.mkdir()
    for name in ("direct_sft", "drp_sft", "rl_d"):
        (models / name).symlink_to(tiny_dir, target_is_directory=True)
    base_eval = {**(SMALL_PARAMS.get("eval") or {}), "checkpoints": ["direct_sft", "drp_sft", "rl_d"]}
    params = {**SMALL_PARAMS, "eval": {**base_eval, "max_questions": 3, "split": "test"}}
    plan = eval_plan(params, models, small_built)
    val_ids = [r["sample_id"] for r in read_jsonl(small_built / "samples_val.jsonl")][:3]
    assert plan.choice_set is not None and [r["sample_id"] for r in plan.choice_set.rows] == val_ids
    choice = choose_best(plan)
    assert choice.chosen_by == CHOSEN_ON_VAL and set(choice.val) == {"drp_sft", "rl_d"}
    assert choice.best == "drp_sft"  # the same weights: a tie goes to the earliest
    assert all(cell["n"] == 3 for cell in choice.val.values())
    fixed = eval_plan({**params, "eval": {**params["eval"], "best_checkpoint": "rl_d"}}, models, small_built)
    assert fixed.choice_set is None and choose_best(fixed).best == "rl_d"
    on_val = eval_plan({**params, "eval": {**params["eval"], "split": "val"}}, models, small_built)
    assert on_val.choice_set is None and choose_best(on_val).best is None  # val both chooses and judges


def test_the_metrics_table_and_figures_name_the_split_they_scored():
    from videor4.evaluation.figures import pipeline_figures
    from videor4.evaluation.stage import EvalPlan, eval_summaries, eval_table

    rows = _format_rows()
    results = _baseline_results(rows)
    for r in results:  # the synthetic set, as the stage names it
        r.summaries["synthetic"] = r.summaries.pop("synth")
        r.predictions["synthetic"] = r.predictions.pop("synth")
    sets = [EvalSet("synthetic", "Synthetic", rows)]
    assert eval_metrics(results, sets, 1)["split"] == "test"  # the eval stage's own, by default
    assert headline_metrics(results, sets)["split"] == "test"
    names = [r.name for r in results]
    settings = EvalSettings(checkpoints=names, max_steps=1, split="val")
    plan = EvalPlan(settings, {}, VISION, 16, sets, {n: Path("models") / n for n in names})
    headline, metrics = eval_summaries(results, plan, {})
    assert (headline["split"], metrics["split"], list(metrics)[0]) == ("val", "val", "split")
    table = eval_table(results, plan, {}, {n: "0123456789abcdef" for n in names})
    assert table.startswith("# Video-R4 evaluation: val split\n")
    assert "- split: val (samples_val.jsonl" in table
    figures = pipeline_figures({}, {}, json.loads(json.dumps(metrics)))
    titles = {name: fig.axes[0].get_title() for name, fig in figures.items() if name != "sft_loss.png"}
    assert titles["scaling.png"].startswith("Test-time scaling, synthetic val (n=40")
    assert titles["accuracy.png"].startswith("Accuracy, synthetic val (n=40")
    old = {k: v for k, v in metrics.items() if k != "split"}  # metrics from before the split was recorded
    assert "synthetic test" in pipeline_figures({}, {}, old)["accuracy.png"].axes[0].get_title()
