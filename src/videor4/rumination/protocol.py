"""The tool protocol: tool schemas, the system prompt, parsing model output, and
the text of turns.  Shared by synthesis, SFT encoding, rollouts, eval and the CLI.

A model turn is free reasoning text followed by either one
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` or a final answer in
`\\boxed{...}`.  Parsing never raises: a malformed call becomes an error string
that the environment turns into an `Execution error: <reason>` observation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from videor4.core.io import is_int, is_number

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
MAX_FRAMES_PER_CLIP = 8  # the default of VisionConfig.max_frames_per_clip


def tool_schemas(max_frames_per_clip: int = MAX_FRAMES_PER_CLIP) -> list[dict[str, Any]]:
    """The tools as the model is told of them; the clip limit is the one the tools enforce."""
    return [
        {
            "type": "function",
            "function": {
                "name": "clipping",
                "description": (
                    "Select frames of the video by their number; they are returned at higher resolution."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "target_frames": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "description": (
                                "1-indexed numbers of the frames you were shown "
                                f"(at most {max_frames_per_clip})."
                            ),
                        }
                    },
                    "required": ["target_frames"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "cropping",
                "description": (
                    "Zoom into a region of an image seen so far; "
                    "the region is returned re-encoded at high resolution."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "target_image": {
                            "type": "integer",
                            "description": (
                                "1-indexed number of the image "
                                "(frames first, then every returned image in order)."
                            ),
                        },
                        "bbox_2d": {
                            "type": "array",
                            "items": {"type": "number"},
                            "description": "[x1, y1, x2, y2], normalized to [0, 1] of the target image.",
                        },
                    },
                    "required": ["target_image", "bbox_2d"],
                },
            },
        },
    ]


def system_prompt(max_frames_per_clip: int = MAX_FRAMES_PER_CLIP) -> str:
    """The system turn of every conversation: the call syntax and the tool schemas."""
    return (
        "You answer questions about videos whose text may be small or brief. "
        "You are shown a few low-resolution frames. Think step by step. To look closer, call one tool "
        "per turn and wait for its result:\n"
        f'{TOOL_CALL_OPEN}{{"name": <tool name>, "arguments": <arguments>}}{TOOL_CALL_CLOSE}\n'
        "Tools:\n"
        + "\n".join(
            json.dumps(t["function"], separators=(",", ":")) for t in tool_schemas(max_frames_per_clip)
        )
        + "\nWhen you are sure, give the final answer as \\boxed{answer}."
    )


# the defaults (max_frames_per_clip 8): the text the existing datasets and tokenizers were built with
TOOL_SCHEMAS = tool_schemas()
TOOL_NAMES = tuple(t["function"]["name"] for t in TOOL_SCHEMAS)
SYSTEM_PROMPT = system_prompt()


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ToolCall":
        return cls(name=str(d["name"]), arguments=dict(d.get("arguments") or {}))


@dataclass
class ParsedTurn:
    """What one assistant turn said."""

    text: str
    thought: str  # text before the tool call (or before the answer)
    tool_call: ToolCall | None = None
    call_error: str | None = None  # set when the turn tried to call a tool and failed
    answer: str | None = None  # content of the last \boxed{}

    @property
    def wants_tool(self) -> bool:
        return self.tool_call is not None or self.call_error is not None


# ---------------------------------------------------------------- answers
def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, braces balanced; None if there is none."""
    start = text.rfind("\\boxed{")
    while start != -1:
        i, depth = start + len("\\boxed{"), 1
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i:j].strip()
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try an earlier one
    return None


def count_boxed(text: str) -> int:
    return text.count("\\boxed{")


# ---------------------------------------------------------------- tool calls
def is_box(value: Any) -> bool:
    """4 numbers in a list (as JSON gives them) or a tuple (as a dataclass row holds them): the shape
    of `bbox_2d` and of every box in the data (its geometry is the crop tool's to check)."""
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(is_number(v) for v in value)


def check_arguments(call: ToolCall) -> str | None:
    """Type-check a call against its schema; the reason on failure, else None.

    Range checks (frame numbers, image numbers, box geometry) need the state of a
    rollout and live in `tools.RuminationEnv`.
    """
    args = call.arguments
    if call.name not in TOOL_NAMES:
        return f"unknown tool '{call.name}'; available tools: {', '.join(TOOL_NAMES)}"
    if call.name == "clipping":
        frames = args.get("target_frames")
        if frames is None:
            return "clipping needs the argument 'target_frames'"
        if is_int(frames):
            frames = [frames]
            args["target_frames"] = frames
        if not isinstance(frames, list) or not frames:
            return "'target_frames' must be a non-empty list of integers"
        if not all(is_int(f) for f in frames):
            return "'target_frames' must contain integers only"
        extra = set(args) - {"target_frames"}
    else:
        if "target_image" not in args:
            return "cropping needs the argument 'target_image'"
        if "bbox_2d" not in args:
            return "cropping needs the argument 'bbox_2d'"
        if not is_int(args["target_image"]):
            return "'target_image' must be an integer"
        box = args["bbox_2d"]
        if not is_box(box):
            return "'bbox_2d' must be a list of 4 numbers [x1, y1, x2, y2]"
        extra = set(args) - {"target_image", "bbox_2d"}
    if extra:
        return f"unexpected argument(s) for {call.name}: {', '.join(sorted(extra))}"
    return None


def parse_tool_call(payload: str) -> tuple[ToolCall | None, str | None]:
    """Parse the JSON between the tool-call tags into a type-checked ToolCall."""
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError as exc:
        return None, f"tool call is not valid JSON ({exc.msg} at char {exc.pos})"
    if not isinstance(obj, dict):
        return None, "tool call must be a JSON object with 'name' and 'arguments'"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None, "tool call has no 'name'"
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models emit arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None, "tool call 'arguments' is not a JSON object"
    if not isinstance(args, dict):
        return None, "tool call 'arguments' must be a JSON object"
    call = ToolCall(name=name, arguments=args)
    err = check_arguments(call)
    return (None, err) if err else (call, None)


def parse_turn(text: str) -> ParsedTurn:
    """Split an assistant turn into reasoning, at most one tool call, and the answer."""
    open_at = text.find(TOOL_CALL_OPEN)
    if open_at == -1:
        stray_close = TOOL_CALL_CLOSE in text
        return ParsedTurn(
            text=text,
            thought=text.split("\\boxed{")[0].strip(),
            call_error="'</tool_call>' without '<tool_call>'" if stray_close else None,
            answer=extract_boxed(text),
        )
    thought = text[:open_at].strip()
    close_at = text.find(TOOL_CALL_CLOSE, open_at)
    if close_at == -1:
        return ParsedTurn(
            text=text, thought=thought, call_error="unterminated <tool_call> (missing </tool_call>)"
        )
    if text.find(TOOL_CALL_OPEN, close_at) != -1:
        return ParsedTurn(text=text, thought=thought, call_error="only one tool call per turn is allowed")
    call, err = parse_tool_call(text[open_at + len(TOOL_CALL_OPEN) : close_at].strip())
    return ParsedTurn(text=text, thought=thought, tool_call=call, call_error=err)


# ---------------------------------------------------------------- turn texts
def format_tool_call(call: ToolCall) -> str:
    return f"{TOOL_CALL_OPEN}\n{json.dumps(call.to_dict(), separators=(', ', ': '))}\n{TOOL_CALL_CLOSE}"


def format_assistant_turn(thought: str, call: ToolCall | None = None, answer: str | None = None) -> str:
    parts = [thought.strip()] if thought.strip() else []
    if call is not None:
        parts.append(format_tool_call(call))
    elif answer is not None:
        parts.append(f"\\boxed{{{answer}}}")
    return "\n".join(parts)


# Perception pretraining's LOCATE question (videor4.data.perception): the answer is the box a crop call takes.
LOCATE_QUESTION = "Give the normalized box [x1, y1, x2, y2] of the text asked about. {question}"


def box_text(box: list[float]) -> str:
    """A box as a crop call writes it: two decimals, JSON."""
    return json.dumps([round(v, 2) for v in box])


def outward_box(box: list[float], step: float) -> list[float]:
    """`box` rounded outward to multiples of `step` (so it still holds what it held), within [0, 1]."""
    n = round(1 / step)
    lo = [math.floor(v * n + 1e-9) / n for v in box[:2]]
    hi = [math.ceil(v * n - 1e-9) / n for v in box[2:]]
    return [round(min(max(v, 0.0), 1.0), 2) for v in (*lo, *hi)]


def locate_phrase(thing: str, box: list[float]) -> str:
    """Where a named thing is, as the policy says it before it zooms (and as LOCATE answers).

    Naming the thing right before its coordinates puts the name next to the numbers that
    depend on it, which a small model needs to find the right one among several."""
    return f"The {thing} is at {box_text(box)}."


def read_phrase(text: str) -> str:
    """What the policy says once it can read a text (and what READ answers)."""
    return f'It reads "{text}".'


ZOOM = " Let me zoom in."


def zoom_turn(thing: str, box: list[float], image: int = 1) -> tuple[str, ToolCall]:
    """The thought and crop call of a step that zooms into a named thing: its box said, then called.

    Trajectories write every crop this way and LOCATE answers with it in full, so the copy of
    the box from the thought into the call is learnt on every LOCATE example, not only on the
    few hundred trajectories."""
    return locate_phrase(thing, box) + ZOOM, ToolCall("cropping", {"target_image": image, "bbox_2d": box})


def answer_phrase(text: str) -> str:
    """The conclusion of a question that asks for one text."""
    return f'So the answer is "{text}".'


def option_phrase(letter: str) -> str:
    """What a multiple-choice conclusion adds: the option that holds the answer."""
    return f" That is option ({letter})."


def read_answer_turn(text: str, letter: str | None = None) -> str:
    """The final turn after reading the one text a question asks for (and READ's full answer);
    with `letter`, the question was multiple choice and the answer is that option."""
    thought = f"{read_phrase(text)} {answer_phrase(text)}" + (option_phrase(letter) if letter else "")
    return format_assistant_turn(thought, answer=letter or text)


def phrase_reading(turn: str) -> str | None:
    """The text a `read_phrase` in `turn` quotes, or None."""
    start = turn.find('reads "')
    end = turn.find('"', start + len('reads "')) if start != -1 else -1
    return turn[start + len('reads "') : end] if end != -1 else None


def phrase_box(turn: str) -> list[float] | None:
    """The box a `locate_phrase` in `turn` gives, or None when there is no well-formed one."""
    start = turn.find(" is at [")
    end = turn.find("]", start) if start != -1 else -1
    if end == -1:
        return None
    try:
        box = json.loads(turn[start + len(" is at ") : end + 1])
    except ValueError:
        return None
    return [float(v) for v in box] if is_box(box) else None


def phrase_thing(turn: str) -> str | None:
    """The thing a `locate_phrase` in `turn` names ("red sign" of 'The red sign is at [..]'), or None."""
    end = turn.find(" is at [")
    start = turn.rfind("The ", 0, end) if end != -1 else -1
    return turn[start + len("The ") : end] if start != -1 else None


def user_prompt_text(question: str, n_frames: int, timestamps: list[float] | None = None) -> str:
    """The text of the first user turn; the frames precede it as images 1..n."""
    when = ""
    if timestamps:
        when = " at " + ", ".join(f"{t:.1f}s" for t in timestamps)
    return f"The video is shown as {n_frames} frames (images 1 to {n_frames}){when}.\nQuestion: {question}"


def clip_observation_text(frames: list[int], first_image: int) -> str:
    if len(frames) == 1:
        return f"Here is the selected frame {frames[0]} at higher resolution (image {first_image}):"
    last = first_image + len(frames) - 1
    return (
        f"Here are the selected frames {', '.join(map(str, frames))} at higher resolution "
        f"(images {first_image} to {last}):"
    )


def crop_observation_text(width: int, height: int, image_number: int) -> str:
    return f"Here is the cropped region ({width}x{height}) (image {image_number}):"


def error_observation_text(reason: str) -> str:
    return f"Execution error: {reason}"
