import json

import pytest

from videor4.rumination.protocol import (
    SYSTEM_PROMPT,
    TOOL_NAMES,
    ToolCall,
    extract_boxed,
    format_assistant_turn,
    parse_turn,
)


def test_system_prompt_lists_both_tools():
    for name in TOOL_NAMES:
        assert f'"name":"{name}"' in SYSTEM_PROMPT


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so the answer is \\boxed{7K3X}", "7K3X"),
        ("\\boxed{A} then \\boxed{B}", "B"),
        ("nested \\boxed{\\text{ab}c}", "\\text{ab}c"),
        ("no answer here", None),
        ("\\boxed{unclosed", None),
        ("\\boxed{ok} and \\boxed{unclosed", "ok"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_well_formed_calls_round_trip():
    for call in (
        ToolCall("clipping", {"target_frames": [2, 5]}),
        ToolCall("cropping", {"target_image": 3, "bbox_2d": [0.1, 0.2, 0.5, 0.6]}),
    ):
        turn = parse_turn(format_assistant_turn("Let me look closer.", call))
        assert turn.call_error is None
        assert turn.tool_call == call
        assert turn.thought == "Let me look closer."
        assert turn.answer is None


def test_answer_turn():
    turn = parse_turn("The sign reads 42. \\boxed{42}")
    assert turn.tool_call is None and turn.call_error is None and not turn.wants_tool
    assert turn.answer == "42"


def test_single_int_frame_is_accepted_as_list():
    turn = parse_turn('<tool_call>{"name": "clipping", "arguments": {"target_frames": 3}}</tool_call>')
    assert turn.tool_call.arguments == {"target_frames": [3]}


def test_arguments_given_as_json_string():
    payload = json.dumps({"name": "clipping", "arguments": json.dumps({"target_frames": [1]})})
    assert parse_turn(f"<tool_call>{payload}</tool_call>").tool_call.arguments == {"target_frames": [1]}


@pytest.mark.parametrize(
    "body,needle",
    [
        ('{"name": "clipping", "arguments": {"target_frames": [1,]}', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"arguments": {}}', "no 'name'"),
        ('{"name": "zoom", "arguments": {}}', "unknown tool 'zoom'"),
        ('{"name": "clipping", "arguments": {}}', "needs the argument 'target_frames'"),
        ('{"name": "clipping", "arguments": {"target_frames": []}}', "non-empty list"),
        ('{"name": "clipping", "arguments": {"target_frames": ["2"]}}', "integers only"),
        ('{"name": "clipping", "arguments": {"target_frames": [true]}}', "integers only"),
        ('{"name": "cropping", "arguments": {"bbox_2d": [0, 0, 1, 1]}}', "needs the argument 'target_image'"),
        ('{"name": "cropping", "arguments": {"target_image": 1}}', "needs the argument 'bbox_2d'"),
        (
            '{"name": "cropping", "arguments": {"target_image": "1", "bbox_2d": [0, 0, 1, 1]}}',
            "must be an integer",
        ),
        ('{"name": "cropping", "arguments": {"target_image": 1, "bbox_2d": [0, 0, 1]}}', "4 numbers"),
        ('{"name": "cropping", "arguments": {"target_image": 1, "bbox_2d": [0, "a", 1, 1]}}', "4 numbers"),
        (
            '{"name": "cropping", "arguments": {"target_image": 1, "bbox_2d": [0, 0, 1, 1], "zoom": 2}}',
            "unexpected argument",
        ),
        ('{"name": "clipping", "arguments": "not json"}', "not a JSON object"),
        ('{"name": "clipping", "arguments": [1]}', "must be a JSON object"),
    ],
)
def test_malformed_calls_become_errors(body, needle):
    turn = parse_turn(f"thinking <tool_call>{body}</tool_call>")
    assert turn.tool_call is None
    assert turn.call_error is not None and needle in turn.call_error
    assert turn.wants_tool


@pytest.mark.parametrize(
    "text,needle",
    [
        ('<tool_call>{"name": "clipping", "arguments": {"target_frames": [1]}}', "unterminated"),
        (
            '<tool_call>{"name": "clipping", "arguments": {"target_frames": [1]}}</tool_call>'
            '<tool_call>{"name": "clipping", "arguments": {"target_frames": [2]}}</tool_call>',
            "only one tool call",
        ),
        ('{"name": "clipping"}</tool_call>', "without '<tool_call>'"),
    ],
)
def test_malformed_tags(text, needle):
    turn = parse_turn(text)
    assert turn.tool_call is None and needle in turn.call_error


def test_the_default_system_prompt_is_unchanged():
    # datasets and the tiny tokenizer were built with this exact text (max_frames_per_clip 8)
    import hashlib

    assert hashlib.md5(SYSTEM_PROMPT.encode()).hexdigest() == "71da8de6adeebc00936d977eee39f1ba"
