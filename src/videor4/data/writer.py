"""Reasoning text written by a (vision-)language model: `data.cot.writer: model`.

Synthesis (`videor4.data.synthesis`) plans a trajectory and executes its tool calls for
real; every thought it stores is template text.  The Video-R4 paper has an LLM/LMM write
the thinking instead.  Here any Hugging Face chat model (a text-only causal LM or a
vision-language checkpoint, a local folder or a Hub id) writes each step's thought from
the question, the observations executed so far and the evidence the step reads.

What the model writes is prose only.  The tool calls, observations, images and the final
answer stay exactly as the executed plan made them: a model is never asked for them and
its text is never parsed for them.  Every written thought is checked (`check_thought`);
one that breaks a rule is replaced by the template's thought, and each replacement is
counted by its reason, so a weak writer degrades to the template data instead of
corrupting it.

Generated texts are cached by content (sha256 of the writer's identity and the prompt),
one atomically written JSON file each, so an interrupted run resumes where it stopped and
a re-run generates nothing (and never loads the model).

Step indices: 0 .. len(steps)-1 name the thoughts before each tool call; len(steps)
names the final thought (the one before the answer).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from videor4.core.io import atomic_write_text
from videor4.core.schema import OPTION_LETTERS
from videor4.core.scoring import normalize_answer
from videor4.data.synthesis import MISS_PHRASE
from videor4.rumination.protocol import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ToolCall,
    box_text,
    count_boxed,
    extract_boxed,
    parse_turn,
)
from videor4.rumination.trajectory import ROLLOUT_KIND, Step, Trajectory

MAX_THOUGHT_CHARS = 300  # two sentences; the longest template thought is about half of it

# Rejection reasons, in the order `check_thought` tests them.
REASONS = (
    "empty",  # nothing but whitespace
    "too_long",  # more than max_chars
    "format",  # tool-call or answer markup, or special tokens: the turn's call/answer come from the plan only
    "unfinished",  # does not end a sentence: generation stopped at max_new_tokens
    "wrong_frame",  # names a frame that does not exist or that the step's call does not look at
    "wrong_image",  # names an image not seen yet, or another image than the one a crop zooms into
    "wrong_box",  # writes a box other than the crop call's
    "missing_box",  # a crop step's thought must state its box: the policy copies it into the call
    "missing_reading",  # leaves out a text the step read in the last observation
    "wrong_answer",  # the final thought states an answer, number or code other than what was read/answered
)


# ---------------------------------------------------------------- configuration
@dataclass
class WriterConfig:
    """`data.cot` settings of the model writer."""

    name_or_path: str = ""  # local checkpoint folder (or a reference folder, `base_model.json`) or Hub id
    max_new_tokens: int = 48  # one or two sentences; longer output is cut and rejected as unfinished
    temperature: float = 0.0  # 0.0: greedy (deterministic); > 0: sampling seeded by `seed` per batch
    batch_size: int = 8
    cache_dir: str | None = None  # generated texts by content hash; None: no cache
    seed: int = 0
    max_chars: int = MAX_THOUGHT_CHARS
    dtype: str = "auto"  # as `model.dtype`: bf16 on a GPU that has it, else fp32
    device: str | None = None  # None: cuda when available, else cpu


class ThoughtWriter(Protocol):
    """What `rewrite_thoughts` needs from a writer."""

    @property
    def writer_id(self) -> str:
        """Identifies everything that determines the output for a prompt (part of the cache key)."""
        ...

    def write(self, prompts: list[list[dict[str, Any]]]) -> list[str]:
        """One generated text per chat prompt."""
        ...


# ---------------------------------------------------------------- what a trajectory says
_QUOTED = re.compile(r'"([^"]+)"')
_THING = re.compile(r"\bThe (.+?) (?:is|may be) at \[")


def _miss_texts(template: str) -> set[str]:
    """Texts a "miss" step read that are not what the question asks about."""
    before, after = MISS_PHRASE.split("{text}")
    pattern = re.escape(before) + r"(.+?)" + re.escape(after)
    return set(re.findall(pattern, template))


def readings(template: str) -> list[str]:
    """The texts a template thought says were read (every quoted text, in order, once each).

    Synthesis quotes what a step read in the next thought (`read_phrase`, the miss wording) and
    the answer of the final one (`answer_phrase`), so this is the evidence that thought reports.
    """
    return list(dict.fromkeys(_QUOTED.findall(template)))


def _template_thought(traj: Trajectory, step_index: int) -> str:
    if step_index == len(traj.steps):
        return traj.final_thought
    if not 0 <= step_index < len(traj.steps):
        raise IndexError(f"step_index {step_index} out of range 0..{len(traj.steps)} for {traj.traj_id}")
    return traj.steps[step_index].thought


def _ok(step: Step) -> bool:
    return step.tool_call is not None and step.error is None


def image_frames(traj: Trajectory, upto: int) -> dict[int, int | None]:
    """Every image seen before step `upto`, by 1-based number → the 1-based shown frame it shows.

    Frames are images 1..n; a clip adds its frames in order; a crop adds one image of its target's
    frame (None when that is unknown); a failed call adds nothing (`tools.RuminationEnv` numbering).
    """
    n = len(traj.frame_indices)
    frames: dict[int, int | None] = {i: i for i in range(1, n + 1)}
    for step in traj.steps[:upto]:
        if not _ok(step):
            continue
        call = step.tool_call
        if call.name == "clipping":
            for f in call.arguments.get("target_frames") or []:
                frames[len(frames) + 1] = int(f)
        elif call.name == "cropping":
            frames[len(frames) + 1] = frames.get(int(call.arguments.get("target_image", 0)))
    return frames


def _option_text(traj: Trajectory, answer: str | None) -> str | None:
    if answer is None or traj.problem_type != "multiple_choice" or not traj.options:
        return None
    i = OPTION_LETTERS.find(answer.strip().upper()) if len(answer.strip()) == 1 else -1
    return traj.options[i] if 0 <= i < len(traj.options) else None


# ---------------------------------------------------------------- the prompt
WRITER_SYSTEM = (
    "You write the private reasoning of an assistant that answers questions about a video. "
    "It was shown a few low-resolution frames and looks closer with two tools: clipping returns chosen "
    "frames "
    "at higher resolution, cropping zooms into a box of an image. You are told what it has done and read "
    "so far "
    "and what it does next; write the one or two sentences it thinks right before that. "
    "Write plain sentences only: no tool-call tags, no JSON, no \\boxed{}, no lists. "
    "Quote texts exactly as they were read, write boxes exactly as given, and call frames and images "
    "by the numbers given."
)


def _describe_call(call: ToolCall, frames: dict[int, int | None], template: str) -> str:
    args = call.arguments
    if call.name == "clipping":
        nums = ", ".join(str(f) for f in args.get("target_frames") or [])
        return f"select frame(s) {nums} to see them at higher resolution"
    if call.name == "cropping":
        image = int(args.get("target_image", 0))
        frame = frames.get(image)
        where = f"image {image}" + (f" (frame {frame})" if frame is not None and image != frame else "")
        thing = _THING.search(template)
        what = (
            f"the {thing.group(1)}"
            if thing and "may be" not in thing.group(0)
            else "a region that may hold the text"
        )
        return f"zoom into {what} in {where}, box {box_text(args.get('bbox_2d') or [])}"
    return f"call {call.name} {json.dumps(args)}"


def _quote_readings(template: str) -> str:
    missed = _miss_texts(template)
    return ", ".join(
        f'"{t}"' + (" (not the text the question asks about)" if t in missed else "")
        for t in readings(template)
    )


def writer_prompt(traj: Trajectory, step_index: int) -> list[dict[str, Any]]:
    """Chat messages (system + user, text only) asking for thought `step_index` of `traj`.

    The user turn gives the question, the frames shown, each earlier step's call, observation and
    what was read in it, the evidence this thought reports and the action it leads to (the call,
    or for the final thought the final answer).  The evidence comes from the template thoughts,
    so `traj` must still hold the synthesizer's thoughts.
    """
    template = _template_thought(traj, step_index)
    n = len(traj.frame_indices)
    lines = [
        f"Question: {traj.question}",
        f"The assistant was shown {n} frames of the video (images 1 to {n}).",
    ]
    if step_index:
        lines.append("What it did so far:")
    for j, step in enumerate(traj.steps[:step_index]):
        frames = image_frames(traj, j)
        call = (
            _describe_call(step.tool_call, frames, step.thought)
            if step.tool_call
            else "make a malformed tool call"
        )
        lines.append(f"{j + 1}. It chose to {call}. Result: {step.observation_text}")
        if j + 1 < step_index:  # what it read there is what the next thought reported
            read = _quote_readings(_template_thought(traj, j + 1))
            if read:
                lines.append(f"   It read: {read}.")
    read = _quote_readings(template)
    if read:
        lines.append(f"In the last result it read: {read}.")
    asks = ["Write its reasoning in one or two sentences."]
    if readings(template):
        asks.append("Say what it read, quoted exactly.")
    if step_index < len(traj.steps):
        step = traj.steps[step_index]
        frames = image_frames(traj, step_index)
        action = _describe_call(step.tool_call, frames, template) if step.tool_call else "look again"
        lines.append(f"Next it will {action}.")
        if step.tool_call is not None and step.tool_call.name == "cropping":
            asks.append(f"State the box as {box_text(step.tool_call.arguments.get('bbox_2d') or [])}.")
        asks.append("Do not give the answer yet.")
    else:
        option = _option_text(traj, traj.final_answer)
        answer = f"{traj.final_answer}" + (
            f" (option {traj.final_answer}: {option})" if option is not None else ""
        )
        lines.append(f"Next it gives the final answer: {answer}.")
        asks.append("Conclude with that answer in words.")
    lines.append(" ".join(asks))
    return [
        {"role": "system", "content": WRITER_SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
    ]


# ---------------------------------------------------------------- checking a written thought
_FRAMES = re.compile(
    r"\bframes?\s*(?:#|no\.?\s*|number\s*)?(\d+(?:\s*(?:,|and|or|to|through|-|–|&)\s*\d+)*)", re.IGNORECASE
)
_IMAGES = re.compile(
    r"\bimages?\s*(?:#|no\.?\s*|number\s*)?(\d+(?:\s*(?:,|and|or|to|through|-|–|&)\s*\d+)*)", re.IGNORECASE
)
_RANGE = re.compile(r"(\d+)\s*(?:to|through|-|–)\s*(\d+)", re.IGNORECASE)
_BOX = re.compile(r"\[\s*-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?){3}\s*\]")
_CODE = re.compile(r"[A-Za-z0-9]*\d[A-Za-z0-9]*(?:[.,]\d+)*")
_SAID_ANSWER = re.compile(
    r"\banswer\s*(?:is|:)\s*(?:the\s+)?(?:option\s*)?[\"'“(]*\s*([^\s\"'”.,;:!?)]+)", re.IGNORECASE
)
_SAID_OPTION = re.compile(r"\b[Oo]ption\s*\(?([A-H])\)?(?![A-Za-z])")
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")


def _numbers(spec: str) -> list[int]:
    """The numbers a mention lists: "2, 5 and 7" or "1 to 8"."""
    out: list[int] = []
    for part in re.split(r"\s*(?:,|and|or|&)\s*", spec):
        m = _RANGE.fullmatch(part.strip())
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            out += list(range(lo, hi + 1)) if 0 <= hi - lo <= 64 else [lo, hi]
        elif part.strip().isdigit():
            out.append(int(part))
    return out


def _mentions(pattern: re.Pattern, text: str) -> list[int]:
    return [n for m in pattern.finditer(text) for n in _numbers(m.group(1))]


def _has_text(text: str, needle: str) -> bool:
    """`needle` occurs in `text` as whole words, after answer normalization."""
    n, hay = normalize_answer(needle), normalize_answer(text)
    if not n:  # normalizing drops articles: "A" (a letter, a code) is compared as written
        n, hay = needle.strip().lower(), text.lower()
    return bool(n) and re.search(r"(?<![\w.])" + re.escape(n) + r"(?![\w])", hay) is not None


def _is_answer(said: str, traj: Trajectory) -> bool:
    """Whether `said` (what a thought calls the answer) is the final answer (or its option's text)."""
    answer = (traj.final_answer or "").strip()
    said = said.strip().strip("()")
    if traj.problem_type == "multiple_choice" and len(said) == 1 and said.isalpha():
        return said.upper() == answer.upper()
    option = _option_text(traj, answer)
    return any(
        said.lower() == a.lower() or normalize_answer(said) == normalize_answer(a) != ""
        for a in (answer, option)
        if a
    )


def _boxes(text: str) -> list[list[float]]:
    return [json.loads(m.group(0)) for m in _BOX.finditer(text)]


def _same_box(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) == 4 and all(abs(float(x) - float(y)) < 5e-3 for x, y in zip(a, b))


def _known_texts(traj: Trajectory) -> list[str]:
    """Every text a final thought may name: what was read, the answer(s), options, question, observations."""
    texts = [traj.question, *(traj.answers or []), *(traj.options or [])]
    texts += [traj.final_answer or ""] + [s.observation_text for s in traj.steps]
    for k in range(len(traj.steps) + 1):
        texts += readings(_template_thought(traj, k))
    return texts


def check_thought(
    thought: str, traj: Trajectory, step_index: int, max_chars: int = MAX_THOUGHT_CHARS
) -> str | None:
    """Why a written thought cannot replace thought `step_index` of `traj`, or None if it can.

    Rules (first failing one wins; reasons in `REASONS`):
    - empty / too_long: nothing, or more than `max_chars` characters.
    - format: tool-call tags, `\\boxed{`, a parsable answer or call (`protocol.parse_turn`), or
      `<|...|>` special tokens; the call and the answer of the turn come from the plan only.
    - unfinished: it does not end a sentence (cut at max_new_tokens).
    - wrong_frame: "frame k" with k not shown; on a clip step, k not among the clipped frames;
      on a crop step, k not the frame the cropped image shows.
    - wrong_image: "image k" not seen before the step; on a crop step, k not the cropped image.
    - wrong_box / missing_box: a box other than the crop call's; a crop step without its box
      (the policy learns to copy the box it wrote into the call, `protocol.zoom_turn`).
    - missing_reading: a text the template reports as read in the last observation is absent.
    - wrong_answer (final thought): "answer is X" / "option (X)" other than the final answer, or a
      number/code that is neither the answer nor any text of the trajectory (readings, options,
      question, observations), nor an existing frame/image number.
    """
    text = thought.strip()
    reason = _form_problem(text, max_chars)
    if reason is not None:
        return reason
    final = step_index == len(traj.steps)
    template = _template_thought(traj, step_index)
    reason = _reference_problem(text, traj, step_index, None if final else traj.steps[step_index].tool_call)
    if reason is not None:
        return reason
    if any(not _has_text(text, r) for r in readings(template)):
        return "missing_reading"
    if final:
        return _final_answer_problem(text, traj)
    return None


def _form_problem(text: str, max_chars: int) -> str | None:
    """empty, too_long, format or unfinished (see `check_thought`), or None."""
    if not text:
        return "empty"
    if len(text) > max_chars:
        return "too_long"
    parsed = parse_turn(text)
    if (
        TOOL_CALL_OPEN in text
        or TOOL_CALL_CLOSE in text
        or count_boxed(text)
        or extract_boxed(text) is not None
        or parsed.wants_tool
        or parsed.answer is not None
        or "<|" in text
    ):
        return "format"
    if not _SENTENCE_END.search(text):
        return "unfinished"
    return None


def _reference_problem(text: str, traj: Trajectory, step_index: int, call: ToolCall | None) -> str | None:
    """wrong_frame, wrong_image, wrong_box or missing_box (see `check_thought`) for the step whose
    call is `call` (None: the final thought), or None."""
    n = len(traj.frame_indices)
    frames = image_frames(traj, step_index)
    args = call.arguments if call is not None else {}

    allowed_frames = set(range(1, n + 1))
    if call is not None and call.name == "clipping":
        allowed_frames &= {int(f) for f in args.get("target_frames") or []}
    elif (
        call is not None
        and call.name == "cropping"
        and frames.get(int(args.get("target_image", 0))) is not None
    ):
        allowed_frames &= {frames[int(args["target_image"])]}
    if any(f not in allowed_frames for f in _mentions(_FRAMES, text)):
        return "wrong_frame"

    allowed_images = set(frames)
    if call is not None and call.name == "cropping":
        allowed_images &= {int(args.get("target_image", 0))}
    if any(i not in allowed_images for i in _mentions(_IMAGES, text)):
        return "wrong_image"

    boxes = _boxes(text)
    if call is not None and call.name == "cropping":
        box = args.get("bbox_2d") or []
        if any(not _same_box(b, box) for b in boxes):
            return "wrong_box"
        if not boxes:
            return "missing_box"
    elif boxes:
        return "wrong_box"
    return None


def _final_answer_problem(text: str, traj: Trajectory) -> str | None:
    """wrong_answer (see `check_thought`) for a final thought, or None."""
    if any(not _is_answer(said, traj) for said in _SAID_ANSWER.findall(text)):
        return "wrong_answer"
    options_said = _SAID_OPTION.findall(text)
    if traj.problem_type == "multiple_choice" and any(not _is_answer(x, traj) for x in options_said):
        return "wrong_answer"
    known = " ".join(_known_texts(traj))
    without_refs = _IMAGES.sub(" ", _FRAMES.sub(" ", text))
    if any(not _has_text(known, code) for code in _CODE.findall(without_refs)):
        return "wrong_answer"
    return None


# ---------------------------------------------------------------- rewriting trajectories
def cache_key(writer_id: str, messages: list[dict[str, Any]]) -> str:
    """sha256 of the writer's identity and the prompt: what the generated text depends on."""
    payload = json.dumps({"writer": writer_id, "messages": messages}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.json"


def cached_text(cache_dir: str | os.PathLike | None, key: str) -> str | None:
    """The text generated for `key`, if the cache holds it."""
    if cache_dir is None:
        return None
    path = _cache_path(cache_dir, key)
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["text"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent (or unreadable): generate it again


def _store(cache_dir: str | os.PathLike | None, key: str, writer_id: str, text: str) -> None:
    if cache_dir is not None:  # temp file + os.replace: a kill leaves no half-written entry
        atomic_write_text(
            _cache_path(cache_dir, key),
            json.dumps({"writer": writer_id, "text": text}, ensure_ascii=False) + "\n",
        )


def _clean(text: str) -> str:
    """One paragraph: a thought is prose between the turn's start and its call."""
    return " ".join(text.split())


def rewrite_thoughts(
    trajectories: list[Trajectory], writer: ThoughtWriter, cfg: WriterConfig
) -> tuple[list[Trajectory], Counter]:
    """New trajectories whose thoughts the writer wrote where they pass `check_thought`.

    Every step thought and the final thought is asked for (batched across trajectories, cached
    by content in `cfg.cache_dir`); a rejected one keeps the template's text.  The counter has
    `model` and `template` (fallbacks), which add up to the number of thoughts, and
    `rejected_<reason>` per rejection.  Calls, observations, images and answers are untouched;
    the inputs are not modified.
    """
    jobs, prompts = _thought_prompts(trajectories, writer)
    texts = _written_texts(prompts, writer, cfg)

    counts: Counter = Counter(model=0, template=0)  # both always reported, zero included
    chosen: dict[tuple[int, int], str] = {}
    for t, k, key in jobs:
        traj = trajectories[t]
        thought = _clean(texts[key])
        reason = check_thought(thought, traj, k, cfg.max_chars)
        if reason is None:
            counts["model"] += 1
            chosen[t, k] = thought
        else:
            counts["template"] += 1
            counts[f"rejected_{reason}"] += 1
            chosen[t, k] = _template_thought(traj, k)

    out = []
    for t, traj in enumerate(trajectories):
        base = copy.deepcopy(traj)  # nothing shared with the input: editing one leaves the other as it was
        steps = [replace(s, thought=chosen[t, k]) for k, s in enumerate(base.steps)]
        out.append(replace(base, steps=steps, final_thought=chosen[t, len(traj.steps)]))
    return out, counts


def _thought_prompts(
    trajectories: list[Trajectory], writer: ThoughtWriter
) -> tuple[list[tuple[int, int, str]], dict[str, list[dict[str, Any]]]]:
    """(every thought to write as (trajectory, step index, cache key), each distinct prompt by key)."""
    jobs: list[tuple[int, int, str]] = []  # (trajectory, step index, cache key)
    prompts: dict[str, list[dict[str, Any]]] = {}
    for t, traj in enumerate(trajectories):
        if traj.kind == ROLLOUT_KIND or any(s.text is not None for s in traj.steps):
            raise ValueError(
                f"{traj.traj_id}: a policy's rollout keeps the turns it wrote; "
                "only synthesized thoughts are rewritten"
            )
        for k in range(len(traj.steps) + 1):
            messages = writer_prompt(traj, k)
            key = cache_key(writer.writer_id, messages)
            jobs.append((t, k, key))
            prompts.setdefault(key, messages)
    return jobs, prompts


def _written_texts(
    prompts: dict[str, list[dict[str, Any]]], writer: ThoughtWriter, cfg: WriterConfig
) -> dict[str, str]:
    """The writer's text for each prompt by key: from the cache, else generated in batches (and cached)."""
    texts: dict[str, str] = {}
    todo = []
    for key in prompts:
        hit = cached_text(cfg.cache_dir, key)
        if hit is None:
            todo.append(key)
        else:
            texts[key] = hit
    for start in range(0, len(todo), max(1, cfg.batch_size)):  # each batch is cached before the next starts
        keys = todo[start : start + max(1, cfg.batch_size)]
        written = writer.write([prompts[k] for k in keys])
        if len(written) != len(keys):
            raise RuntimeError(f"the writer returned {len(written)} texts for {len(keys)} prompts")
        for key, text in zip(keys, written):
            texts[key] = text
            _store(cfg.cache_dir, key, writer.writer_id, text)
    return texts
