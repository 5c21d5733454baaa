"""Rumination trajectory synthesis and quality control.

Every question is reduced to "read these evidence texts, then derive the
answer" (the text itself, the larger of two numbers, the number of distinct
codes).  A trajectory is planned step by step and *executed* with the real
tools, so its observations are exactly what the model would get back:

- DRP (deliberate, atomic): one kind of operation per trajectory —
  clip-only (pick the frames that hold the evidence) or crop-only (zoom into
  each evidence box in its low-resolution frame).
- CRP (compositional): clip, then crop inside the clipped frames; variants
  first zoom wide and then re-crop tighter, or first look at a wrong region
  (a distractor text) and correct themselves.

QC drops a trajectory when a tool call fails, when it reads from clipped
frames text too small to be legible there (`min_clip_text_px`), when its final
crops do not cover the ground-truth evidence box, when the answer it derives from what it
read does not match the reference answer, or when it would need more calls
than allowed; each drop is counted by reason.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from videor4.core.schema import OPTION_LETTERS, Evidence, Sample, TextBox
from videor4.core.scoring import anls_similarity, normalize_answer
from videor4.data.evidence import box_coverage
from videor4.rumination.protocol import (
    ZOOM,
    ToolCall,
    answer_phrase,
    box_text,
    option_phrase,
    outward_box,
    read_phrase,
    zoom_turn,
)
from videor4.rumination.tools import RuminationEnv, VisionConfig
from videor4.rumination.trajectory import Trajectory, TrajectoryRecorder
from videor4.rumination.video import FRAME_CACHE, FrameCache, load_frames

DRP_KINDS = ("drp_clip", "drp_crop")
CRP_VARIANTS = ("direct", "recrop", "miss")
CRP_CROP_TARGETS = ("clip", "frame")


@dataclass
class SynthesisConfig:
    n_drp: int = 200  # caps; paper scale 7000
    n_crp: int = 200  # paper scale 10000
    max_tool_calls: int = 5  # peers allow 3-5
    min_evidence_coverage: float = 0.9  # of the GT box, inside the final crop region
    min_answer_similarity: float = 1.0  # ANLS similarity of the derived answer to a reference answer
    # clip-only reading needs text this tall (px) in the clipped frame; smaller text needs a crop
    min_clip_text_px: float = 0.0
    # question kinds whose clip selects every shown frame: which frame shows a flashing caption is
    # what the policy does not know before it looks
    clip_all_kinds: tuple[str, ...] = ()
    crp_variants: tuple[str, ...] = CRP_VARIANTS  # which compositional variants to synthesise
    # where a CRP trajectory's crops are drawn after its clip: "clip" (the paper: in the clipped
    # frame) or "frame" (in the frame as first shown; the crop is cut from the source frame either way)
    crp_crop_target: str = "clip"
    seed: int = 0


@dataclass
class SampleContext:
    """What synthesis knows about one sample."""

    sample: Sample
    frame_indices: list[int]  # source indices of the shown frames
    evidence: list[Evidence]  # what the trajectory reads (OCR-matched or ground truth)
    qc_boxes: list[Evidence]  # what QC checks crops against (ground truth where known)
    frame_texts: dict[int, list[TextBox]] = field(default_factory=dict)  # every known text per source frame

    def pos(self, frame: int) -> int:
        """0-based position of a source frame among the shown frames."""
        return self.frame_indices.index(frame)


@dataclass
class SynthesisResult:
    trajectories: dict[str, list[Trajectory]]  # "drp" / "crp"
    dropped: Counter


# ---------------------------------------------------------------- answers
def derive_answer(kind: str, readings: list[str]) -> str | None:
    """The answer a reader of `readings` would give for this kind of question."""
    if not readings:
        return None
    if kind == "compare":
        try:
            return max(readings, key=lambda r: float(r))
        except ValueError:
            return None
    if kind == "count":
        return str(len({normalize_answer(r) for r in readings}))
    return readings[0]


def final_answer_for(sample: Sample, derived: str | None, min_similarity: float) -> str | None:
    """The reference answer this derived text supports, or None if it does not match."""
    if derived is None:
        return None
    if sample.problem_type == "multiple_choice":
        options = sample.options or []
        for i, opt in enumerate(options):
            if normalize_answer(opt) == normalize_answer(derived):
                letter = OPTION_LETTERS[i]
                return letter if letter in sample.answers else None
        return None
    for ans in sample.answers:
        if (
            normalize_answer(ans) == normalize_answer(derived)
            or anls_similarity(ans, derived) >= min_similarity
        ):
            return ans
    return None


# ---------------------------------------------------------------- phrasing
# One wording per step: the policy says where the thing it wants is (`locate_phrase`) before each
# crop and what it read (`read_phrase`) after, in the words perception pretraining taught it.
def _look_frames(frames: list[int], n_shown: int) -> str:
    if len(frames) == n_shown and frames == list(range(1, n_shown + 1)):
        return f"I need a closer look at frames 1 to {n_shown}."
    many = len(frames) > 1
    return f"I need a closer look at frame{'s' if many else ''} {', '.join(map(str, frames))}."


_UNSURE = "The text may be at {box}." + ZOOM  # the first look of a "miss" trajectory
MISS_PHRASE = 'That is "{text}", not the text I need.'
_TIGHTER = "Let me zoom in further."


def _conclusion(sample: Sample, readings: list[str], answer: str) -> str:
    kind = sample.question_kind
    if kind == "compare" and len(readings) >= 2:
        text = f"The numbers are {' and '.join(readings)}; the larger is {derive_answer(kind, readings)}."
    elif kind == "count":
        distinct = list(dict.fromkeys(readings))
        text = f"The codes are {', '.join(readings)}: {len(distinct)} different."
    else:
        text = answer_phrase(readings[0])
    if sample.problem_type == "multiple_choice":
        text += option_phrase(answer)
    return text


# ---------------------------------------------------------------- planning
class _Planner:
    """Plans and records one trajectory; raises _Drop with a QC reason."""

    def __init__(
        self,
        ctx: SampleContext,
        env: RuminationEnv,
        rec: TrajectoryRecorder,
        rng: random.Random,
        cfg: SynthesisConfig,
    ):
        self.ctx, self.env, self.rec, self.rng, self.cfg = ctx, env, rec, rng, cfg
        self.readings: list[str] = []
        self.pending = ""  # reaction to the last observation, prefixed to the next thought
        self.final_regions: list[tuple[int, tuple[float, ...]]] = []  # where each reading was read

    def call(self, thought: str, call: ToolCall):
        if len(self.rec.steps) >= self.cfg.max_tool_calls:
            raise _Drop("too_many_steps")
        obs = self.rec.call((self.pending + " " + thought).strip(), call)
        self.pending = ""
        if not obs.ok:
            raise _Drop("execution_error")
        return obs

    def clip(self, evidence: list[Evidence]) -> dict[int, int]:
        """Clip the frames holding the evidence (every shown frame for the question kinds in
        `clip_all_kinds`); returns {frame position: image number of its clipped frame}."""
        if self.ctx.sample.question_kind in self.cfg.clip_all_kinds:
            positions = list(range(len(self.ctx.frame_indices)))
        else:
            positions = sorted({self.ctx.pos(e.frame) for e in evidence})
        frames = [p + 1 for p in positions]
        first = len(self.env.seen) + 1
        self.call(
            _look_frames(frames, len(self.ctx.frame_indices)), ToolCall("clipping", {"target_frames": frames})
        )
        return {p: first + i for i, p in enumerate(positions)}

    def crop(self, image: int, box: list[float], thought: str):
        call = ToolCall("cropping", {"target_image": image, "bbox_2d": box})
        return self.call(thought, call)

    def crop_named(self, image: int, box: list[float], name: str | None):
        # the box as the policy writes it: rounded outward to vision.box_step (one number token each)
        said = outward_box(box, self.env.vision.box_step)
        thought, call = zoom_turn(name or "text", said, image)
        return self.call(thought, call)

    def read(self, text: str, frame_pos: int, region: tuple[float, ...]) -> None:
        self.readings.append(text)
        self.final_regions.append((frame_pos, region))
        self.pending = read_phrase(text)

    def image_of(self, frame_pos: int, clipped: dict[int, int] | None) -> int:
        return clipped[frame_pos] if clipped else frame_pos + 1

    def read_by_crops(self, evidence: list[Evidence], clipped: dict[int, int] | None, variant: str) -> None:
        for k, ev in enumerate(evidence):
            pos = self.ctx.pos(ev.frame)
            image = self.image_of(pos, clipped)
            if variant == "miss" and k == 0:
                wrong = self._distractor(ev)
                if wrong is not None:
                    said = outward_box(wrong.bbox, self.env.vision.box_step)
                    self.crop(image, said, _UNSURE.format(box=box_text(said)))
                    self.pending = MISS_PHRASE.format(text=wrong.text)
            if variant == "recrop":
                wide = _widen(ev.bbox, 0.12)
                obs = self.crop_named(image, wide, ev.label)
                region = obs.regions[0][1]
                inner = _relative(ev.bbox, region)
                self.pending = _TIGHTER
                obs = self.crop_named(len(self.env.seen), inner, ev.label)
            else:
                obs = self.crop_named(image, ev.bbox, ev.label)
            self.read(ev.text, obs.regions[0][0], obs.regions[0][1])

    def _distractor(self, ev: Evidence) -> TextBox | None:
        target = normalize_answer(ev.text)
        others = [
            t
            for t in self.ctx.frame_texts.get(ev.frame, [])
            if normalize_answer(t.text) != target and box_coverage(t.bbox, _widen(ev.bbox, 0.1)) == 0.0
        ]
        return self.rng.choice(others) if others else None


class _Drop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _widen(box: list[float], m: float) -> list[float]:
    return [max(0.0, box[0] - m), max(0.0, box[1] - m), min(1.0, box[2] + m), min(1.0, box[3] + m)]


def _relative(box: list[float], region: tuple[float, ...]) -> list[float]:
    """`box` (source-normalized) in the coordinates of an image showing `region`."""
    w, h = region[2] - region[0], region[3] - region[1]
    rel = [
        (box[0] - region[0]) / w,
        (box[1] - region[1]) / h,
        (box[2] - region[0]) / w,
        (box[3] - region[1]) / h,
    ]
    return [min(1.0, max(0.0, v)) for v in rel]


def synthesize_one(
    ctx: SampleContext,
    kind: str,
    variant: str,
    traj_id: str,
    vision: VisionConfig,
    image_dir: Path | None,
    cfg: SynthesisConfig,
    rng: random.Random,
    cache: FrameCache | None = FRAME_CACHE,
) -> Trajectory:
    """Plan, execute and QC one trajectory; raises _Drop(reason) when it fails QC."""
    sample = ctx.sample
    if not ctx.evidence:
        raise _Drop("no_evidence")
    if any(e.frame not in ctx.frame_indices for e in ctx.evidence):
        raise _Drop("evidence_not_shown")
    env = RuminationEnv(load_frames(sample.frame_source(), indices=ctx.frame_indices, cache=cache), vision)
    rec = TrajectoryRecorder(env, image_dir, traj_id)
    plan = _Planner(ctx, env, rec, rng, cfg)
    if kind == "drp_clip":
        plan.clip(ctx.evidence)
        clip_height = env.seen[-1].image.height  # pixels of a clipped frame, top to bottom
        if any((e.bbox[3] - e.bbox[1]) * clip_height < cfg.min_clip_text_px for e in ctx.evidence):
            raise _Drop("unreadable_after_clip")
        for ev in ctx.evidence:  # read in the sharper clipped frames: no crop region
            plan.readings.append(ev.text)
        plan.pending = " ".join(read_phrase(ev.text) for ev in ctx.evidence)
    elif kind == "drp_crop":
        plan.read_by_crops(ctx.evidence, None, "direct")
    else:
        clipped = plan.clip(ctx.evidence)
        plan.read_by_crops(ctx.evidence, clipped if cfg.crp_crop_target == "clip" else None, variant)

    # QC: every crop that a reading came from must cover its ground-truth box
    for qc, (pos, region) in zip(ctx.qc_boxes, plan.final_regions):
        if ctx.frame_indices[pos] != qc.frame or box_coverage(qc.bbox, region) < cfg.min_evidence_coverage:
            raise _Drop("crop_misses_evidence")
    derived = derive_answer(sample.question_kind, plan.readings)
    answer = final_answer_for(sample, derived, cfg.min_answer_similarity)
    if answer is None:
        raise _Drop("answer_mismatch")
    final_thought = (plan.pending + " " + _conclusion(sample, plan.readings, answer)).strip()
    return Trajectory(
        traj_id=traj_id,
        sample_id=sample.sample_id,
        kind=kind,
        video=sample.frame_source(),
        frame_indices=list(ctx.frame_indices),
        num_source_frames=env.video.num_source_frames,
        question=sample.prompt_question(),
        answers=list(sample.answers),
        problem_type=sample.problem_type,
        options=sample.options,
        vision=vision.to_dict(),
        steps=rec.steps,
        final_thought=final_thought,
        final_answer=answer,
    )


def synthesize(
    contexts: list[SampleContext],
    vision: VisionConfig,
    cfg: SynthesisConfig,
    image_dir: Path | None,
    progress: Callable[[int], None] | None = None,
) -> SynthesisResult:
    """DRP and CRP trajectories for the samples, up to the configured sizes.

    Each sample offers two DRP variants (clip-only, crop-only) and three CRP
    variants (direct, re-crop, miss-then-correct); candidates are taken in a
    seeded random order until each set reaches its size.
    """
    rng = random.Random(cfg.seed)
    dropped: Counter = Counter()
    out: dict[str, list[Trajectory]] = {"drp": [], "crp": []}
    plans = {
        "drp": [(ctx, kind, "direct") for ctx in contexts for kind in DRP_KINDS],
        "crp": [(ctx, "crp", variant) for ctx in contexts for variant in cfg.crp_variants],
    }
    sizes = {"drp": cfg.n_drp, "crp": cfg.n_crp}
    for name, candidates in plans.items():
        rng.shuffle(candidates)
        for attempt, (ctx, kind, variant) in enumerate(candidates):
            if len(out[name]) >= sizes[name]:
                break
            traj_id = f"{name}-{attempt:06d}"
            try:
                traj = synthesize_one(
                    ctx, kind, variant, traj_id, vision, image_dir, cfg, random.Random(rng.random())
                )
            except _Drop as drop:
                dropped[drop.reason] += 1
                if image_dir is not None:
                    remove_images(image_dir / traj_id)
            else:
                out[name].append(traj)
            if progress:
                progress(1)
    return SynthesisResult(out, dropped)


def remove_images(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
