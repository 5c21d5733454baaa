"""ANLS, VQA exact match and multiple-choice letter extraction."""

from __future__ import annotations

import pytest

from videor4.core.scoring import (
    anls_score,
    exact_match,
    extract_option_letter,
    levenshtein,
    multiple_choice_correct,
    normalize_answer,
    score_answer,
)


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "ab", 2),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("same", "same", 0),
    ],
)
def test_levenshtein(a: str, b: str, d: int) -> None:
    assert levenshtein(a, b) == d
    assert levenshtein(b, a) == d


def test_anls_exact_case_and_whitespace_insensitive() -> None:
    assert anls_score("  CODE 7K3X ", ["code 7k3x"]) == 1.0


def test_anls_partial_and_threshold_cutoff() -> None:
    # one substitution in 4 characters: 1 - 1/4
    assert anls_score("abcx", ["abcd"]) == pytest.approx(0.75)
    # exactly at the threshold is kept, just below is cut to 0
    assert anls_score("abxx", ["abcd"]) == pytest.approx(0.5)
    assert anls_score("abxxx", ["abcd"]) == 0.0  # 1 - 3/5 = 0.4
    assert anls_score("abcx", ["abcd"], threshold=0.8) == 0.0


def test_anls_best_over_answers_and_empty_prediction() -> None:
    assert anls_score("gate b12", ["exit 4", "gate b12", "gate b1"]) == 1.0
    assert anls_score("gate b1", ["exit 4", "gate b12"]) == pytest.approx(1 - 1 / 8)
    assert anls_score("", ["a"]) == 0.0
    assert anls_score("   ", ["a"]) == 0.0
    assert anls_score(None, ["a"]) == 0.0
    assert anls_score("a", []) == 0.0


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Two dogs!", "2 dogs"),
        ("  a  Red\tcar. ", "red car"),
        ("U.S.", "us"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("red-white", "red white"),
        ("dont", "don't"),
        ("don\u2019t", "don't"),
        ("couldntve", "couldn't've"),
        ("None", "0"),
        ("well", "well"),  # a real word, not "we'll"
        ("Yes, it is", "yes it is"),
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


def test_exact_match() -> None:
    assert exact_match("Two", ["2"]) == 1.0
    assert exact_match("the EXIT.", ["exit"]) == 1.0
    assert exact_match("exit 4", ["exit", "exit 5"]) == 0.0
    assert exact_match("exit 5", ["exit", "exit 5"]) == 1.0
    assert exact_match("", ["a"]) == 0.0
    assert exact_match("the", ["a"]) == 0.0  # both normalize to nothing: not a match
    assert exact_match(None, ["a"]) == 0.0


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B) the red car", "B"),
        ("C: the red car", "C"),
        ("The answer is B", "B"),
        ("answer: (C)", "C"),
        ("Answer: **D**", "D"),
        ("The answer would be option C.", "C"),
        ("\\boxed{d}", "D"),
        ("(A) is wrong because of the sign. (C) fits.", "C"),  # last marked letter wins
        ("The answer is B. Option (A) is wrong.", "B"),  # explicit beats marked
        ("I first thought B, but I pick C", "C"),  # last lone letter wins
        ("Looking closer...\nD. 42 miles", "D"),  # letter at a line start
    ],
)
def test_extract_option_letter(text: str, letter: str) -> None:
    assert extract_option_letter(text) == letter


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "A man is crossing the street.",  # "A" as an article
        "the answer is a car",
        "Because it is red",
        "E",  # outside the first 4 options
        "answer is E",
        "no idea",
    ],
)
def test_extract_option_letter_unparseable(text: str | None) -> None:
    assert extract_option_letter(text) is None


def test_extract_option_letter_respects_n_options() -> None:
    assert extract_option_letter("(E)", n_options=5) == "E"
    assert extract_option_letter("(E)", n_options=4) is None
    with pytest.raises(ValueError):
        extract_option_letter("A", n_options=0)


def test_multiple_choice_correct() -> None:
    assert multiple_choice_correct("The answer is (B).", ["B"]) == 1.0
    assert multiple_choice_correct("B", ["(B) red car"]) == 1.0
    assert multiple_choice_correct("C", ["B"]) == 0.0
    assert multiple_choice_correct("I cannot tell", ["B"]) == 0.0  # unparseable: wrong


def test_score_answer() -> None:
    assert score_answer("Two", ["two"], "open") == {"acc": 1.0, "anls": 1.0}
    # ANLS compares the raw (lower-cased) strings: no number-word mapping
    assert score_answer("Two", ["2"], "open") == {"acc": 1.0, "anls": 0.0}
    open_partial = score_answer("gate b1", ["gate b12"], "open")
    assert open_partial["acc"] == 0.0
    assert open_partial["anls"] == pytest.approx(1 - 1 / 8)
    assert score_answer("(C)", ["C"], "multiple_choice") == {"acc": 1.0, "anls": 1.0}
    assert score_answer("xyz", ["C"], "multiple_choice") == {"acc": 0.0, "anls": 0.0}
    with pytest.raises(ValueError):
        score_answer("a", ["a"], "essay")
