"""Executable rumination trajectories: JSONL rows plus observation images.

A trajectory stores the frames the model was shown (source indices), each
step's reasoning and tool call, and the observation it got back, with a
sha256 of every observation image's pixels.  Because the calls are executed by
`tools.RuminationEnv`, replaying a stored trajectory against its video reproduces
every observation exactly; `replay` checks that.

Synthesis writes them (with the observation images as PNG files) and a policy's
rollouts convert to them (`Rollout.to_trajectory`: sha256s only, the turns as the
model wrote them, malformed calls included), so eval predictions, transcripts,
reports and `video-r4 data show/replay` all read one format.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from videor4.rumination.protocol import (
    MAX_FRAMES_PER_CLIP,
    ParsedTurn,
    ToolCall,
    format_assistant_turn,
    parse_turn,
    system_prompt,
    user_prompt_text,
)
from videor4.rumination.tools import Observation, RuminationEnv, VisionConfig
from videor4.rumination.video import FRAME_CACHE, FrameCache, load_frames


def image_digest(img: Image.Image) -> str:
    """sha256 of an image's pixels (mode, size and raw bytes), independent of file encoding."""
    h = hashlib.sha256()
    h.update(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


@dataclass
class Step:
    thought: str
    tool_call: ToolCall | None  # None: the model's call did not parse (`error` says why, `text` has it)
    observation_text: str
    images: list[str] = field(default_factory=list)  # PNG paths (none for a model's rollout)
    image_sha256: list[str] = field(default_factory=list)
    error: str | None = None
    text: str | None = None  # the turn as the model wrote it; synthesized steps are `turn_text`'s rendering

    @property
    def turn_text(self) -> str:
        """The assistant turn as it was (or, synthesized, will be) shown to the model."""
        return self.text if self.text is not None else format_assistant_turn(self.thought, self.tool_call)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "thought": self.thought,
            "tool_call": self.tool_call.to_dict() if self.tool_call is not None else None,
            "observation": {
                "text": self.observation_text,
                "images": self.images,
                "image_sha256": self.image_sha256,
                "error": self.error,
            },
        }
        if self.text is not None:  # only model turns: synthesized rows keep their bytes
            d["text"] = self.text
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Step":
        obs = d.get("observation") or {}
        call = d["tool_call"]
        return cls(
            thought=str(d.get("thought", "")),
            tool_call=ToolCall.from_dict(call) if call is not None else None,
            observation_text=str(obs.get("text", "")),
            images=[str(p) for p in obs.get("images") or []],
            image_sha256=[str(h) for h in obs.get("image_sha256") or []],
            error=obs.get("error"),
            text=None if d.get("text") is None else str(d["text"]),
        )


ROLLOUT_KIND = "rollout"  # the kind of a policy's trajectory (`Rollout.to_trajectory`)
# fields only a model's rollout sets; left out of a row while unset, so synthesized rows keep their bytes
MODEL_FIELDS = ("final_text", "finish_reason", "max_images")


@dataclass
class Trajectory:
    traj_id: str
    sample_id: str
    kind: str  # drp_clip | drp_crop | crp (synthesized) | direct (`direct_trajectory`) | rollout (a policy's)
    video: str | list[str]  # mp4 path, page folder, or list of page images
    frame_indices: list[int]
    num_source_frames: int
    question: str  # as shown to the model (options included)
    answers: list[str]
    problem_type: str
    options: list[str] | None
    vision: dict[str, Any]
    steps: list[Step]
    final_thought: str
    final_answer: str | None  # None: a rollout that ended unanswered
    final_text: str | None = None  # the last turn as the model wrote it, when it made no executed call
    finish_reason: str | None = None  # a rollout's (answer | no_answer | max_tool_calls | ...)
    max_images: int | None = None  # the rollout's image budget: replay needs it to refuse the same calls

    def to_dict(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k != "steps" and not (k in MODEL_FIELDS and getattr(self, k) is None)
        }
        d["steps"] = [s.to_dict() for s in self.steps]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        return cls(
            traj_id=str(d["traj_id"]),
            sample_id=str(d["sample_id"]),
            kind=str(d["kind"]),
            video=d["video"],
            frame_indices=[int(i) for i in d["frame_indices"]],
            num_source_frames=int(d["num_source_frames"]),
            question=str(d["question"]),
            answers=[str(a) for a in d["answers"]],
            problem_type=str(d.get("problem_type", "open")),
            options=d.get("options"),
            vision=dict(d.get("vision") or {}),
            steps=[Step.from_dict(s) for s in d.get("steps") or []],
            final_thought=str(d.get("final_thought", "")),
            final_answer=None if d["final_answer"] is None else str(d["final_answer"]),
            final_text=None if d.get("final_text") is None else str(d["final_text"]),
            finish_reason=d.get("finish_reason"),
            max_images=None if d.get("max_images") is None else int(d["max_images"]),
        )

    def tools_used(self) -> list[str | None]:
        return [s.tool_call.name if s.tool_call is not None else None for s in self.steps]

    def turn_texts(self) -> list[str]:
        """Every assistant turn: one per step, then the final one (a rollout may end on a step)."""
        texts = [s.turn_text for s in self.steps]
        if self.final_text is not None:
            texts.append(self.final_text)
        elif self.kind != ROLLOUT_KIND:  # synthesized: the answer turn is rendered
            texts.append(format_assistant_turn(self.final_thought, answer=self.final_answer))
        return texts


DIRECT_KIND = "direct"  # a single-pass target: the answer straight from the shown frames
DIRECT_THOUGHT = "I answer from the frames as shown."


def direct_trajectory(traj: Trajectory) -> Trajectory:
    """The same question answered in one turn, with no tool call: the target of the single-pass
    baseline (direct_sft), trained on exactly the questions and answers of `traj`.

    The final answer is kept as it is (a multiple-choice question's is its option letter, as
    synthesis writes it); the thought is neutral, so it names no reading the frames may not show.
    """
    return dataclasses.replace(
        traj,
        traj_id=f"{traj.traj_id}-direct",
        kind=DIRECT_KIND,
        steps=[],
        final_thought=DIRECT_THOUGHT,
        final_text=None,
        finish_reason=None,
        max_images=None,
    )


def open_env(
    video: str | list[str],
    frame_indices: list[int],
    vision: VisionConfig,
    cache: FrameCache | None = FRAME_CACHE,
    max_images: int | None = None,
) -> RuminationEnv:
    """The environment a trajectory (or rollout) over these shown frames runs in."""
    return RuminationEnv(
        load_frames(video, indices=frame_indices, cache=cache), vision, max_images=max_images
    )


class TrajectoryRecorder:
    """Executes calls in an env one at a time and records them as Steps.

    Synthesis decides each call after seeing the previous observation (e.g. a
    re-crop inside the region a crop actually returned), so recording is
    incremental; observation images are saved as PNG under image_dir/traj_id/.
    """

    def __init__(self, env: RuminationEnv, image_dir: Path | None, traj_id: str):
        self.env, self.image_dir, self.traj_id = env, image_dir, traj_id
        self.steps: list[Step] = []
        self.observations: list[Observation] = []

    def call(self, thought: str, call: ToolCall) -> Observation:
        obs = self.env.execute(call)
        k = len(self.steps)
        paths, digests = [], []
        for j, img in enumerate(obs.images):
            digests.append(image_digest(img))
            if self.image_dir is not None:
                path = self.image_dir / self.traj_id / f"step{k}-{j}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path, format="PNG")
                paths.append(str(path))
        self.steps.append(Step(thought, call, obs.text, paths, digests, obs.error))
        self.observations.append(obs)
        return obs


@dataclass
class ReplayResult:
    ok: bool
    problems: list[str]


def execute_step(env: RuminationEnv, step: Step) -> Observation:
    """Run a stored step's call again; a malformed one is re-parsed from the turn the model wrote."""
    if step.tool_call is None:
        turn = parse_turn(step.text or "")
        if not turn.wants_tool:  # no text to re-parse: the stored reason
            turn = ParsedTurn(step.text or "", step.thought, call_error=step.error or "no tool call")
        return env.step(turn)
    return env.execute(ToolCall(step.tool_call.name, dict(step.tool_call.arguments)))


def reexecute(
    traj: Trajectory, cache: FrameCache | None = FRAME_CACHE
) -> tuple[RuminationEnv, list[Observation]]:
    """Run a trajectory's calls again against its video: the env and every observation's pixels
    and regions, which a row keeps only as sha256s (and, synthesized, PNG files)."""
    env = open_env(
        traj.video,
        traj.frame_indices,
        VisionConfig.from_dict(traj.vision),
        cache=cache,
        max_images=traj.max_images,
    )
    return env, [execute_step(env, step) for step in traj.steps]


def replay(
    traj: Trajectory, cache: FrameCache | None = FRAME_CACHE, check_files: bool = True
) -> ReplayResult:
    """Re-execute the stored calls against the video and compare every observation (and the PNG
    files, where a row has them: a model's rollout stores sha256s only)."""
    problems = []
    for k, (step, obs) in enumerate(zip(traj.steps, reexecute(traj, cache)[1])):
        if obs.text != step.observation_text:
            problems.append(f"step {k}: observation text differs: {obs.text!r} != {step.observation_text!r}")
        got = [image_digest(img) for img in obs.images]
        if got != step.image_sha256:
            problems.append(
                f"step {k}: observation images differ ({len(got)} vs {len(step.image_sha256)} stored)"
            )
        if check_files:
            for path, digest in zip(step.images, step.image_sha256):
                if not Path(path).is_file():
                    problems.append(f"step {k}: image file missing: {path}")
                    continue
                with Image.open(path) as im:
                    if image_digest(im.convert("RGB")) != digest:
                        problems.append(f"step {k}: stored image {path} does not match its sha256")
    return ReplayResult(ok=not problems, problems=problems)


def prompt_messages(
    question: str, frame_images: list[Any], max_frames_per_clip: int = MAX_FRAMES_PER_CLIP
) -> list[dict[str, Any]]:
    """The opening of every conversation: system (tools) → user (frames, then the question).

    `question` is the full question text (options included), as `Sample.prompt_question()` gives it;
    `max_frames_per_clip` is the limit of the env the calls run in (`VisionConfig`), as the model is told it.
    """
    user: list[dict[str, Any]] = [{"type": "image", "image": img} for img in frame_images]
    user.append({"type": "text", "text": user_prompt_text(question, len(frame_images))})
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt(max_frames_per_clip)}]},
        {"role": "user", "content": user},
    ]


def trajectory_messages(
    traj: Trajectory, frame_images: list[Image.Image] | None = None
) -> list[dict[str, Any]]:
    """Chat messages for a trajectory: system → user(frames + question) → assistant/tool turns.

    Images are given as {"type": "image", "image": <PIL or path>} parts, in the
    order the model sees them; `frame_images` are the shown (downscaled) frames
    (loaded from the video when omitted).
    """
    vision = VisionConfig.from_dict(traj.vision)
    if frame_images is None:
        frame_images = open_env(traj.video, traj.frame_indices, vision).initial_images()
    messages = prompt_messages(traj.question, frame_images, vision.max_frames_per_clip)
    for step in traj.steps:
        messages.append(
            {
                "role": "assistant",
                "content": [{"type": "text", "text": format_assistant_turn(step.thought, step.tool_call)}],
            }
        )
        tool = [{"type": "text", "text": step.observation_text}]
        tool += [{"type": "image", "image": path} for path in step.images]
        messages.append({"role": "tool", "content": tool})
    messages.append(
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": format_assistant_turn(traj.final_thought, answer=traj.final_answer)}
            ],
        }
    )
    return messages


def sample_env(row: dict[str, Any], vision: VisionConfig, max_images: int | None = None) -> RuminationEnv:
    """The environment for a dataset row (a built sample): its shown frames, or `vision.num_frames` uniform
    ones."""
    from videor4.core.schema import Sample

    source = Sample.from_dict(row).frame_source()
    indices = row.get("frame_indices")
    if indices:
        return open_env(source, list(indices), vision, max_images=max_images)
    frames = load_frames(source, num_frames=vision.num_frames, cache=FRAME_CACHE)
    return RuminationEnv(frames, vision, max_images=max_images)
