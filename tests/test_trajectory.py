import shutil

from PIL import Image

from videor4.core.io import read_jsonl, write_jsonl
from videor4.rumination.protocol import ToolCall, parse_turn
from videor4.rumination.tools import VisionConfig
from videor4.rumination.trajectory import (
    Trajectory,
    TrajectoryRecorder,
    open_env,
    replay,
    trajectory_messages,
)
from videor4.rumination.video import FrameCache, uniform_indices

VISION = VisionConfig(
    frame_max_pixels=4 * 28 * 28, clip_max_pixels=16 * 28 * 28, crop_min_pixels=16 * 28 * 28
)


def make_traj(video, image_dir) -> Trajectory:
    frames = uniform_indices(16, 5)
    env = open_env(str(video), frames, VISION)
    plan = [
        ("The block is small; look at frame 3 closer.", ToolCall("clipping", {"target_frames": [3]})),
        ("Zoom into the block.", ToolCall("cropping", {"target_image": 6, "bbox_2d": [0.3, 0.3, 0.7, 0.7]})),
        ("Zoom again.", ToolCall("cropping", {"target_image": 7, "bbox_2d": [0.1, 0.1, 0.9, 0.9]})),
    ]
    recorder = TrajectoryRecorder(env, image_dir, "t-0")
    for thought, call in plan:
        recorder.call(thought, call)
    steps = recorder.steps
    return Trajectory(
        traj_id="t-0",
        sample_id="s-0",
        kind="crp",
        video=str(video),
        frame_indices=frames,
        num_source_frames=16,
        question="What colour is the block?",
        answers=["white"],
        problem_type="open",
        options=None,
        vision=VISION.to_dict(),
        steps=steps,
        final_thought="It is white.",
        final_answer="white",
    )


def test_replay_reproduces_every_observation(tmp_path, sample_video):
    traj = make_traj(sample_video, tmp_path / "images")
    write_jsonl(tmp_path / "t.jsonl", [traj.to_dict()])
    loaded = Trajectory.from_dict(read_jsonl(tmp_path / "t.jsonl")[0])
    assert loaded == traj
    assert sum(len(s.images) for s in loaded.steps) == 3
    # replay with a fresh cache so frames are decoded again from the mp4
    result = replay(loaded, cache=FrameCache())
    assert result.ok, result.problems


def test_replay_detects_a_changed_observation(tmp_path, sample_video):
    traj = make_traj(sample_video, tmp_path / "images")
    path = traj.steps[1].images[0]
    img = Image.open(path).convert("RGB")
    img.putpixel((0, 0), (1, 2, 3))
    img.save(path)
    traj.steps[2].tool_call.arguments["bbox_2d"] = [0.2, 0.1, 0.9, 0.9]
    problems = replay(traj, cache=FrameCache()).problems
    assert any("step 1: stored image" in p for p in problems)
    assert any("step 2: observation images differ" in p for p in problems)


def test_replay_detects_a_missing_image(tmp_path, sample_video):
    traj = make_traj(sample_video, tmp_path / "images")
    shutil.rmtree(tmp_path / "images")
    assert any("missing" in p for p in replay(traj).problems)


def test_messages_follow_the_protocol(tmp_path, sample_video):
    traj = make_traj(sample_video, tmp_path / "images")
    msgs = trajectory_messages(traj)
    assert [m["role"] for m in msgs] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert sum(1 for p in msgs[1]["content"] if p["type"] == "image") == 5
    calls = [parse_turn(m["content"][0]["text"]) for m in msgs if m["role"] == "assistant"]
    assert [c.tool_call.name for c in calls[:-1]] == ["clipping", "cropping", "cropping"]
    assert calls[-1].answer == "white"


def test_the_system_prompt_states_the_configured_clip_limit(tmp_path, sample_video):
    import dataclasses

    from videor4.policy.model import tokenizer_corpus
    from videor4.rumination.protocol import SYSTEM_PROMPT

    traj = make_traj(sample_video, tmp_path / "images")
    frames = [Image.new("RGB", (56, 56)) for _ in traj.frame_indices]
    assert trajectory_messages(traj, frames)[0]["content"][0]["text"] == SYSTEM_PROMPT  # the default: 8
    assert "(at most 8)" in SYSTEM_PROMPT

    traj.vision = dataclasses.replace(VISION, max_frames_per_clip=3).to_dict()
    prompt = trajectory_messages(traj, frames)[0]["content"][0]["text"]
    assert "(at most 3)" in prompt and "at most 8" not in prompt
    # the tiny model's tokenizer is trained on the prompt the trajectories are encoded with
    write_jsonl(tmp_path / "t.jsonl", [traj.to_dict()])
    assert prompt in list(tokenizer_corpus([tmp_path / "t.jsonl"]))


def test_synthesized_rows_keep_their_fields(tmp_path, sample_video):
    """The fields a model's rollout adds stay out of synthesized rows, so SFT sets keep their bytes."""
    row = make_traj(sample_video, tmp_path / "images").to_dict()
    assert sorted(row) == sorted(
        [
            "traj_id",
            "sample_id",
            "kind",
            "video",
            "frame_indices",
            "num_source_frames",
            "question",
            "answers",
            "problem_type",
            "options",
            "vision",
            "steps",
            "final_thought",
            "final_answer",
        ]
    )
    assert all(sorted(s) == ["observation", "thought", "tool_call"] for s in row["steps"])
    assert Trajectory.from_dict(row).turn_texts()[-1] == "It is white.\n\\boxed{white}"
