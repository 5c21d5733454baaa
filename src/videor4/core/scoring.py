"""Answer scoring: ANLS, VQA exact match, and multiple-choice letter match.

Pure Python so that rewards, evaluation and data QC can all import it cheaply.

- `anls_score` follows the ViteVQA / DocVQA definition (docs/DESIGN.md §5).
- `normalize_answer` follows the VQA v2 evaluation script (GT-Vision-Lab/VQA,
  `vqaEval.py`): punctuation handling, number words zero..ten (and "none") to
  digits, articles dropped, apostrophe-less contractions restored.  Deliberate
  differences: both prediction and ground truth get the full normalization
  (the script only strips punctuation from ground truth, and only sometimes),
  curly apostrophes are read as straight ones, and the contraction table uses
  straight apostrophes throughout (the script's table mixes in curly ones, so
  "dont" there never equals "don't").
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence

from videor4.core.schema import OPTION_LETTERS

# ---------------------------------------------------------------- VQA normalization
_PUNCT = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# A period not followed by a digit ("U.S." -> "US", but "3.5" stays).
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The contractions of the VQA table in canonical form; the lookup table maps every
# spelling with some or all apostrophes missing back to it.  Forms whose
# apostrophe-less spelling is a common word ("we'll" -> "well", "it's" -> "its",
# "let's" -> "lets", "i'd" -> "id") are left out, as in the VQA table.
_CANONICAL_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've "
    "it'll ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't "
    "'ow's'at shan't she'd've she's should've shouldn't shouldn't've somebody'd somebody'd've "
    "somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
    "something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've "
    "when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's "
    "won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll "
    "you're you've"
).split()


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for canonical in _CANONICAL_CONTRACTIONS:
        positions = [i for i, ch in enumerate(canonical) if ch == "'"]
        for k in range(1, len(positions) + 1):
            for dropped in itertools.combinations(positions, k):
                variant = "".join(ch for i, ch in enumerate(canonical) if i not in dropped)
                table.setdefault(variant, canonical)
    return table


_CONTRACTIONS = _contraction_table()


def _process_punctuation(text: str) -> str:
    # As in the VQA script: a punctuation mark next to a space (or any text with a
    # digit-comma-digit) is deleted; otherwise it becomes a space ("red-white" ->
    # "red white").  The condition is tested on the input text, not the running output.
    has_digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for p in _PUNCT:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digits_articles(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(s: str) -> str:
    """VQA-style normalization: "The Two dogs!" -> "2 dogs", "dont" -> "don't"."""
    s = s.replace("\u2019", "'").replace("\u2018", "'")
    s = s.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_articles(_process_punctuation(s))


# ---------------------------------------------------------------- ANLS
def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert / delete / substitute, each cost 1), two-row DP."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a  # keep the rows as short as possible
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls_similarity(a: str, b: str) -> float:
    """1 - lev(a, b) / max(|a|, |b|) on the strings as given (no threshold)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(a, b) / longest


def anls_score(prediction: str | None, answers: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one prediction: best over the answers, scores below `threshold` count 0."""
    if prediction is None:
        return 0.0
    pred = prediction.strip().lower()
    if not pred:
        return 0.0
    best = 0.0
    for answer in answers:
        s = anls_similarity(answer.strip().lower(), pred)
        if s >= threshold:
            best = max(best, s)
    return best


def exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals any normalized answer."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    return 1.0 if any(pred == normalize_answer(a) for a in answers) else 0.0


# ---------------------------------------------------------------- multiple choice
def _option_letters(n_options: int) -> str:
    if not 1 <= n_options <= len(OPTION_LETTERS):
        raise ValueError(f"n_options must be in 1..{len(OPTION_LETTERS)}, got {n_options}")
    return OPTION_LETTERS[:n_options]


@functools.lru_cache(maxsize=None)
def _letter_patterns(letters: str) -> list[list[re.Pattern[str]]]:
    """Patterns in three tiers, most explicit first; group 1 is the letter."""
    up = f"[{letters}]"
    anycase = f"[{letters}{letters.lower()}]"
    end = r"(?![A-Za-z0-9])"
    sep = r"[\s:=*_\-]*"
    explicit = [
        # "answer is B", "Answer: (C)", "the answer would be option D", "answer: **B**".
        # The keyword is case-insensitive, the letter is not ("the answer is a car").
        re.compile(
            rf"(?i:answer){sep}(?:(?i:is|would be|should be|will be){sep})?"
            rf"(?:(?i:option|choice){sep})?[\(\[]?({up}){end}"
        ),
        re.compile(rf"\\boxed\{{\s*[\(\[]?({anycase})\s*[\)\]]?[.:]?\s*\}}"),
    ]
    marked = [
        re.compile(rf"[\(\[]({anycase})[\)\]]"),  # "(B)", "[c]"
        # "B.", "B) foo", "B: foo", "B - foo" or a bare "B" at the start of a line
        re.compile(rf"(?m)^\s*[*_\"']*({up})[*_\"']*\s*(?:[.:)\]]|-\s|$)"),
    ]
    # A standalone capital letter; "A" followed by a lower-case word is the article.
    lone = [re.compile(rf"(?<![A-Za-z0-9'])(?!A\s+[a-z])({up}){end}")]
    return [explicit, marked, lone]


def extract_option_letter(text: str | None, n_options: int = 4) -> str | None:
    """The option letter a free-form answer chooses, or None when there is none.

    Rule: patterns come in three tiers, and the *last* match of the most explicit
    tier that matches anywhere wins:
      1. explicit statements: "answer is B", "Answer: (C)", "\\boxed{B}";
      2. marked letters: "(B)" / "[B]" anywhere, or "B." / "B)" / "B:" / a bare "B"
         at the start of a line;
      3. a standalone capital letter ("I pick C"), except "A" followed by a
         lower-case word, which reads as the article.
    Only the first `n_options` letters count; lower case is accepted only in
    brackets, inside \\boxed{}, or when the whole text is the letter.
    """
    letters = _option_letters(n_options)
    if text is None:
        return None
    stripped = text.strip().strip("*_\"'` ").strip()
    whole = re.fullmatch(rf"[\(\[]?([{letters}{letters.lower()}])[\)\]]?[.:)]?", stripped)
    if whole:
        return whole.group(1).upper()
    for tier in _letter_patterns(letters):
        hits = [(m.start(1), m.group(1)) for pattern in tier for m in pattern.finditer(text)]
        if hits:
            return max(hits)[1].upper()
    return None


def multiple_choice_correct(prediction: str | None, answers: Sequence[str], n_options: int = 4) -> float:
    """1.0 when the prediction's option letter is one of the answers' letters.

    Answers may be bare letters ("B") or lettered options ("(B) red car").
    """
    letter = extract_option_letter(prediction, n_options)
    if letter is None:
        return 0.0
    gold = {extract_option_letter(a, n_options) for a in answers} - {None}
    return 1.0 if letter in gold else 0.0


def score_answer(
    prediction: str | None, answers: Sequence[str], problem_type: str, n_options: int = 4
) -> dict[str, float]:
    """{"acc", "anls"} for one prediction; for multiple choice both are the letter match."""
    if problem_type == "multiple_choice":
        correct = multiple_choice_correct(prediction, answers, n_options)
        return {"acc": correct, "anls": correct}
    if problem_type == "open":
        return {"acc": exact_match(prediction, answers), "anls": anls_score(prediction, answers)}
    raise ValueError(f"unknown problem_type {problem_type!r} (expected 'open' or 'multiple_choice')")
