"""The video-r4 command line, run as a user would (subprocess)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_build import PARAMS  # noqa: F401  (reuses the tiny build)

BIN = Path(sys.executable).parent / "video-r4"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    result = cli("--help")
    assert result.returncode == 0 and "data" in result.stdout
    assert time.perf_counter() - t0 < 3  # heavy libraries are imported lazily
    assert "build" in cli("data", "--help").stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    import yaml

    work = tmp_path_factory.mktemp("cli")
    params = {
        **PARAMS,
        "data": {"ocr": {"max_videos": 0}, "sizes": {"drp": 4, "crp": 4, "rl_d": 2, "rl_c": 2}},
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    (work / "expectations").symlink_to(Path(__file__).resolve().parent.parent / "expectations")
    result = cli("data", "build", cwd=work)
    assert result.returncode == 0, result.stderr
    assert '"n_drp": 4' in result.stdout
    return work


def test_show_renders_a_png(workdir):
    result = cli("data", "show", "crp-000000", cwd=workdir)
    if result.returncode != 0:  # the first CRP candidate may have been dropped by QC
        import json

        first = json.loads((workdir / "data/built/sft_crp.jsonl").read_text().splitlines()[0])["traj_id"]
        result = cli("data", "show", first, cwd=workdir)
    assert result.returncode == 0, result.stderr
    png = Path(workdir / result.stdout.strip().removeprefix("wrote "))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_and_validate(workdir):
    import json

    first = json.loads((workdir / "data/built/sft_drp.jsonl").read_text().splitlines()[0])["traj_id"]
    result = cli("data", "replay", first, cwd=workdir)
    assert result.returncode == 0 and "replay ok" in result.stdout
    result = cli("data", "validate", "data/built/sft_drp.jsonl", "--dataset", "sft_drp", cwd=workdir)
    assert result.returncode == 0, result.stdout


def test_clear_errors(workdir, tmp_path):
    result = cli("data", "show", "nope-1", cwd=workdir)
    assert result.returncode == 1 and "no trajectory 'nope-1'" in result.stderr
    result = cli("data", "build", "--params", str(tmp_path / "missing.yaml"), cwd=workdir)
    assert result.returncode == 1 and "params file not found" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"traj_id": "x"}\n')
    result = cli("data", "validate", str(bad), "--dataset", "sft_drp", cwd=workdir)
    assert result.returncode == 1 and "FAILED" in result.stdout


# ---------------------------------------------------------------- eval predictions: one trajectory format
CLIP = 'Look.\n<tool_call>\n{"name": "clipping", "arguments": {"target_frames": [1, 3]}}\n</tool_call>'
CROP = (
    'Zoom in.\n<tool_call>\n{"name": "cropping", '
    '"arguments": {"target_image": 7, "bbox_2d": [0.1, 0.1, 0.6, 0.6]}}\n</tool_call>'
)


@pytest.fixture(scope="module")
def predictions(tiny_dir, small_built, tmp_path_factory) -> tuple[Path, list[dict]]:
    """An eval prediction file as stages/eval.py writes it, from the tiny policy: greedy answers
    (`answer_all`) and one rollout with forced clip, crop and malformed calls."""
    import torch

    from conftest import SMALL_PARAMS
    from videor4.core.io import read_jsonl, write_jsonl
    from videor4.evaluation.evaluate import EvalSettings, _record, answer_all
    from videor4.policy.encoding import PolicyEncoder
    from videor4.policy.model import load_policy
    from videor4.policy.rollout import RolloutEngine, RolloutSettings, start_group
    from videor4.rumination.tools import VisionConfig

    torch.manual_seed(0)
    vision = VisionConfig.from_dict(SMALL_PARAMS["vision"])
    policy = load_policy(tiny_dir)
    encoder = PolicyEncoder(policy.tokenizer, policy.image_processor)
    rows = read_jsonl(small_built / "samples_test.jsonl")
    records = answer_all(
        policy.model, encoder, rows[:1], vision, EvalSettings(max_new_tokens=8, batch_size=2), 2, 16
    )
    engine = RolloutEngine(
        policy.model,
        encoder,
        RolloutSettings(max_tool_calls=4, max_new_tokens=8, temperature=0.0, force_answer=True),
    )
    r = start_group(engine, rows[1], vision, 1, 1)[0]
    for text in (CLIP, CROP, "<tool_call>{oops</tool_call>"):
        engine.force_turn(r, text)
    engine.run([r])
    records.append(_record(r))
    path = tmp_path_factory.mktemp("eval") / "base.synthetic.rumination.jsonl"
    write_jsonl(path, records)
    return path, records


def test_eval_predictions_carry_the_trajectory_beside_their_scores(predictions):
    _, records = predictions
    for rec in records:
        assert {
            "sample_id",
            "prediction",
            "acc",
            "anls",
            "finish_reason",
            "calls",
            "clip_calls",
            "crop_calls",
            "invalid_calls",
        } <= set(rec)
        assert "turns" not in rec and "ops" not in rec
        traj = rec["trajectory"]
        assert traj["sample_id"] == traj["traj_id"] == rec["sample_id"] and traj["kind"] == "rollout"
        assert traj["final_answer"] == rec["prediction"] and traj["finish_reason"] == rec["finish_reason"]
        assert len(traj["steps"]) == rec["calls"]
    forced = records[-1]
    assert (forced["clip_calls"], forced["crop_calls"], forced["invalid_calls"]) == (1, 1, 1)


def test_show_and_replay_read_an_eval_prediction_file(predictions, tmp_path):
    path, records = predictions
    for rec in records:
        result = cli("data", "replay", rec["sample_id"], "--file", str(path), cwd=tmp_path)
        assert result.returncode == 0 and "replay ok" in result.stdout, result.stdout + result.stderr
    forced = records[-1]["sample_id"]
    result = cli("data", "show", forced, "--file", str(path), "--out", str(tmp_path / "t.png"), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"wrote {tmp_path / 't.png'}", result.stderr
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a changed observation is found (the row stores sha256s only)
    import json

    changed = dict(records[-1], trajectory=json.loads(json.dumps(records[-1]["trajectory"])))
    changed["trajectory"]["steps"][1]["observation"]["image_sha256"] = ["0" * 64]
    (tmp_path / "changed.jsonl").write_text(json.dumps(changed) + "\n")
    result = cli("data", "replay", forced, "--file", str(tmp_path / "changed.jsonl"), cwd=tmp_path)
    assert result.returncode == 1 and "step 1: observation images differ" in result.stdout


def test_prediction_file_errors_are_one_line(predictions, tmp_path):
    path, _ = predictions
    (tmp_path / "malformed.jsonl").write_text('{"sample_id": "q1", "trajectory": {"traj_id": "q1"}}\n')
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    cases = [
        (("show", "q1", "--file", str(tmp_path / "missing.jsonl")), "file not found"),
        (("replay", "nope-1", "--file", str(path)), f"no trajectory 'nope-1' in {path}"),
        (("show", "nope-1", "--file", str(path)), f"no trajectory 'nope-1' in {path}"),
        (("replay", "q1", "--file", str(tmp_path / "malformed.jsonl")), "malformed trajectory 'q1'"),
        (("show", "q1", "--file", str(tmp_path / "broken.jsonl")), "broken.jsonl:1: not valid JSON"),
    ]
    for args, needle in cases:
        result = cli("data", *args, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert (
            result.returncode == 1
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and needle in lines[0]
        ), (args, result.stderr)
