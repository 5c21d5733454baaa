"""The records every data source produces and every later stage reads.

A *sample* is one question about one video (or page deck).  Sources (synthetic,
M4-ViteVQA, documents) all emit `Sample`s; evidence matching fills `evidence`;
trajectory synthesis and RL read them.  Rows are plain JSON so that DVC, GX and
pandas see the same thing a person sees with `head data/built/samples_train.jsonl`.

Conventions
- Boxes are normalized `[x1, y1, x2, y2]` in [0, 1] of the *source* frame.
- `frame` indices in `TextBox`/`Evidence` are 0-based indices of source video
  frames (decord order); the model-facing indices (1-based into the frames it
  was shown) are derived at synthesis/rollout time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PROBLEM_TYPES = ("open", "multiple_choice")
OPTION_LETTERS = "ABCDEFGH"


def question_with_options(question: str, options: list[str]) -> str:
    """A multiple-choice question as the model sees it: the question, then "(A) ..." a line each."""
    return "\n".join(
        [question, "Options:"] + [f"({OPTION_LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    )


@dataclass
class TextBox:
    """One piece of text visible in one frame (ground truth or OCR)."""

    frame: int
    text: str
    bbox: list[float]  # normalized [x1, y1, x2, y2]
    role: str = "text"  # generator's role: target / distractor / caption / ...; "ocr" for OCR hits
    score: float = 1.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextBox":
        return cls(
            frame=int(d["frame"]),
            text=str(d["text"]),
            bbox=[float(v) for v in d["bbox"]],
            role=str(d.get("role", "text")),
            score=float(d.get("score", 1.0)),
        )


@dataclass
class Evidence:
    """Where the answer can be read: a source frame and a normalized box."""

    frame: int
    bbox: list[float]
    text: str
    origin: str = "ground_truth"  # ground_truth | ocr | detection | annotation
    label: str | None = None  # what holds the text, as the question names it ("red sign"), where known

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evidence":
        return cls(
            frame=int(d["frame"]),
            bbox=[float(v) for v in d["bbox"]],
            text=str(d["text"]),
            origin=str(d.get("origin", "ground_truth")),
            label=None if d.get("label") is None else str(d["label"]),
        )


@dataclass
class Sample:
    """One question about one video."""

    sample_id: str
    video: str  # path to an mp4 or a folder of page images, relative to the dataset root
    question: str
    answers: list[str]
    problem_type: str = "open"  # open | multiple_choice
    options: list[str] | None = None  # for multiple choice: option texts, lettered A, B, ...
    question_kind: str = "read"  # read | transient | compare | count | ... (source-specific)
    source: str = "synthetic"  # synthetic | m4vitevqa | document | mcvqa
    split: str = "train"
    evidence: list[Evidence] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def unanswered(cls, video: str, question: str, sample_id: str, source: str) -> "Sample":
        """A question someone asks about a video, with no reference answer (ask, a served model)."""
        return cls(
            sample_id=sample_id,
            video=video,
            question=question,
            answers=[],
            problem_type="open",
            source=source,
            split="test",
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sample":
        return cls(
            sample_id=str(d["sample_id"]),
            video=str(d["video"]),
            question=str(d["question"]),
            answers=[str(a) for a in d["answers"]],
            problem_type=str(d.get("problem_type", "open")),
            options=None if d.get("options") is None else [str(o) for o in d["options"]],
            question_kind=str(d.get("question_kind", "read")),
            source=str(d.get("source", "synthetic")),
            split=str(d.get("split", "train")),
            evidence=[Evidence.from_dict(e) for e in d.get("evidence") or []],
            meta=dict(d.get("meta") or {}),
        )

    def frame_source(self) -> str | list[str]:
        """What to decode: a document's page images (meta["pages"]) or the video path."""
        pages = self.meta.get("pages")
        return [str(p) for p in pages] if pages else self.video

    def prompt_question(self) -> str:
        """The question as the model sees it (options appended for multiple choice)."""
        if self.problem_type != "multiple_choice" or not self.options:
            return self.question
        return question_with_options(self.question, self.options)


@dataclass
class VideoRecord:
    """Ground truth for one generated video (the synthetic source's manifest row)."""

    video_id: str
    path: str  # relative to the dataset root
    width: int
    height: int
    num_frames: int
    fps: float
    text_boxes: list[TextBox] = field(default_factory=list)
    split: str = "train"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VideoRecord":
        return cls(
            video_id=str(d["video_id"]),
            path=str(d["path"]),
            width=int(d["width"]),
            height=int(d["height"]),
            num_frames=int(d["num_frames"]),
            fps=float(d["fps"]),
            text_boxes=[TextBox.from_dict(t) for t in d.get("text_boxes") or []],
            split=str(d.get("split", "train")),
        )


class SkipItem(Exception):
    """An input item that cannot be used; `reason` is a short counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
