"""Evidence matching: where in which frame can an answer be read?

OCR lines are coarser than answers: a line often holds several words ("SCORE 42")
and the answer is one of them.  So an answer is compared (ANLS similarity, after
lower-casing and stripping) with three kinds of *token* of each OCR line:

1. the whole line;
2. every contiguous run of its whitespace-separated words;
3. for a line without any whitespace, every character substring, ignoring
   spaces in the answer.  RapidOCR's PP-OCR models drop the spaces between Latin
   words (measured: "CODE 7K3X" reads "CODE7K3X"), so without this "42" could
   never match "SCORE42".  Lines that do contain spaces come from an engine that
   keeps them, so a match inside one of their words ("cat" in "concatenate") is
   not taken.  Answers shorter than two characters (spaces ignored) are not
   matched this way.

A part of a line gets the line's box cut horizontally in proportion to its
character offsets: OCR gives one box per line, not per character.

Boxes are normalized [x1, y1, x2, y2] (see `videor4.core.schema`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from videor4.core.schema import Evidence, TextBox
from videor4.core.scoring import anls_similarity

# Preference between tokens of equal score: the whole line, then a word run,
# then a character substring (the least specific evidence).
_LINE, _WORDS, _CHARS = 0, 1, 2
MIN_CHAR_MATCH_LEN = 2


# ---------------------------------------------------------------- box helpers
def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when both are empty)."""
    inter = _intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def box_coverage(inner: Sequence[float], outer: Sequence[float]) -> float:
    """Fraction of `inner`'s area that lies inside `outer` (0 for an empty `inner`)."""
    area = box_area(inner)
    return _intersection(inner, outer) / area if area > 0 else 0.0


def crop_covers(box: Sequence[float], evidence: Sequence[float], margin: float, share: float = 0.9) -> bool:
    """Whether a crop of `box`, widened by the crop margin on each side, covers `share` of the
    evidence box: what QC asks of a trajectory's crop, and what LOCATE's metric counts."""
    widened = [box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin]
    return box_coverage(evidence, widened) >= share


def box_center_inside(inner: Sequence[float], outer: Sequence[float]) -> bool:
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


# ---------------------------------------------------------------- token matching
@dataclass(frozen=True)
class TokenMatch:
    """The best token of one OCR line for one answer."""

    score: float  # ANLS similarity, no threshold applied
    kind: int  # _LINE / _WORDS / _CHARS
    start: int  # character span [start, end) in the stripped, lower-cased line
    end: int
    length: int  # characters in that line
    text: str  # the span as the OCR read it (original case)

    def rank(self) -> tuple[float, int, int]:
        # Higher score first; then the more specific kind; then the shorter span.
        return (self.score, -self.kind, -(self.end - self.start))


def _best_substring(pattern: str, text: str) -> tuple[int, int, int]:
    """(distance, start, end) of the substring of `text` closest to `pattern`.

    Sellers' approximate matching: an edit-distance DP whose first row is zero, so
    a match may start anywhere; each cell remembers where its alignment started.
    Among equally distant substrings the one whose length is closest to the
    pattern's wins, since that one has the higher ANLS.
    """
    m = len(pattern)
    prev = [(0, j) for j in range(len(text) + 1)]  # (distance, start) for pattern[:0]
    for i in range(1, m + 1):
        cur = [(i, 0)]
        for j in range(1, len(text) + 1):
            cost = int(pattern[i - 1] != text[j - 1])
            cur.append(
                min(
                    (prev[j - 1][0] + cost, prev[j - 1][1]),
                    (prev[j][0] + 1, prev[j][1]),  # pattern char unmatched
                    (cur[j - 1][0] + 1, cur[j - 1][1]),  # extra text char
                    key=lambda c: (c[0], abs(j - c[1] - i)),
                )
            )
        prev = cur
    end = min(range(len(text) + 1), key=lambda j: (prev[j][0], abs(j - prev[j][1] - m)))
    return prev[end][0], prev[end][1], end


def match_token(answer: str, line: str) -> TokenMatch | None:
    """The best-matching token of OCR `line` for `answer` (see module doc), or None."""
    ans = answer.strip().lower()
    low = line.strip().lower()
    # Spans index `low`; report them in the OCR's own case unless lower-casing
    # changed the length (a few Unicode letters do), which would shift offsets.
    raw = line.strip() if len(line.strip()) == len(low) else low
    if not ans or not low:
        return None
    n = len(low)
    best = TokenMatch(anls_similarity(ans, low), _LINE, 0, n, n, raw)

    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", low)]
    if len(words) > 1:
        for i in range(len(words)):
            for j in range(i, len(words)):
                start, end = words[i][0], words[j][1]
                if (start, end) == (0, n):
                    continue  # the whole line, already scored
                cand = TokenMatch(anls_similarity(ans, low[start:end]), _WORDS, start, end, n, raw[start:end])
                if cand.rank() > best.rank():
                    best = cand
    else:
        compact = "".join(ans.split())
        if len(compact) >= MIN_CHAR_MATCH_LEN and n > len(compact):
            _, start, end = _best_substring(compact, low)
            if end > start:
                cand = TokenMatch(
                    anls_similarity(compact, low[start:end]), _CHARS, start, end, n, raw[start:end]
                )
                if cand.rank() > best.rank():
                    best = cand
    return best


def span_box(box: Sequence[float], start: int, end: int, length: int) -> list[float]:
    """The part of a line box under characters [start, end) of `length` characters."""
    if length <= 0 or (start, end) == (0, length):
        return [float(v) for v in box]
    x1, y1, x2, y2 = box
    w = x2 - x1
    return [x1 + w * start / length, y1, x1 + w * end / length, y2]


def _token_box(box: TextBox, match: TokenMatch) -> list[float]:
    return span_box(box.bbox, match.start, match.end, match.length)


# ---------------------------------------------------------------- evidence
def match_evidence(
    answers: Sequence[str],
    ocr_boxes: Iterable[TextBox],
    frames: set[int] | None = None,
    min_anls: float = 0.5,
) -> list[Evidence]:
    """OCR evidence for the answers: one box per frame, best frames first.

    For every frame (restricted to `frames` when given) the best token over all
    OCR boxes and all answers is kept if its ANLS similarity is >= `min_anls`.
    The Evidence text is the token as the OCR read it.  Sorted by (score desc,
    frame asc).
    """
    best: dict[int, tuple[tuple[float, int, int], TokenMatch, TextBox]] = {}
    for box in ocr_boxes:
        if frames is not None and box.frame not in frames:
            continue
        for answer in answers:
            match = match_token(answer, box.text)
            if match is None or match.score < min_anls:
                continue
            rank = match.rank()
            if box.frame not in best or rank > best[box.frame][0]:
                best[box.frame] = (rank, match, box)
    ordered = sorted(best.items(), key=lambda item: (-item[1][1].score, item[0]))
    return [
        Evidence(frame=frame, bbox=_token_box(box, match), text=match.text, origin="ocr")
        for frame, (_, match, box) in ordered
    ]


def ocr_gt_agreement(
    gt_boxes: Iterable[TextBox],
    ocr_boxes: Iterable[TextBox],
    frames: set[int],
    min_iou: float = 0.3,
    min_anls: float = 0.5,
) -> tuple[float, int]:
    """How often OCR found the ground-truth text: (rate, number of GT boxes).

    A ground-truth box on one of `frames` counts as found when an OCR box on the
    same frame reads its text (token ANLS >= `min_anls`, parts of lines allowed)
    and sits in the same place: IoU >= `min_iou` with the OCR line box or with the
    matched part of it, or the GT box's centre inside the OCR line box.  GT boxes
    with empty text are not counted.  With no GT boxes the rate is 0.0 (check n).
    """
    by_frame: dict[int, list[TextBox]] = {}
    for box in ocr_boxes:
        if box.frame in frames:
            by_frame.setdefault(box.frame, []).append(box)
    n_gt = found = 0
    for gt in gt_boxes:
        if gt.frame not in frames or not gt.text.strip():
            continue
        n_gt += 1
        for box in by_frame.get(gt.frame, []):
            match = match_token(gt.text, box.text)
            if match is None or match.score < min_anls:
                continue
            if (
                box_iou(gt.bbox, box.bbox) >= min_iou
                or box_iou(gt.bbox, _token_box(box, match)) >= min_iou
                or box_center_inside(gt.bbox, box.bbox)
            ):
                found += 1
                break
    return (found / n_gt if n_gt else 0.0), n_gt
