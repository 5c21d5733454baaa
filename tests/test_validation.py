"""Great Expectations gates on hand-built datasets: valid rows pass, each kind of breakage
is caught and named in the summary.  Real GX, one shared context for the whole module."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from videor4.core.io import write_jsonl
from videor4.data.validation import (
    DATASETS,
    DataValidationError,
    build_tables,
    require_valid,
    validate_jsonl,
    validate_rows,
)

EXPECTATIONS = Path(__file__).resolve().parents[1] / "expectations"
SHA = "ab" * 32


# ------------------------------------------------------------------ valid rows
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake repo root with the files the rows reference (relative paths)."""
    root = tmp_path_factory.mktemp("repo")
    (root / "videos").mkdir()
    for vid in ("v1", "v2"):
        (root / "videos" / f"{vid}.mp4").write_bytes(b"not really a video")
    (root / "obs").mkdir()
    for i in range(8):
        (root / "obs" / f"{i}.png").write_bytes(b"\x89PNG")
    return root


def video_rows() -> list[dict[str, Any]]:
    return [
        {
            "video_id": vid,
            "path": f"videos/{vid}.mp4",
            "width": 320,
            "height": 240,
            "num_frames": 16,
            "fps": 8.0,
            "split": "train",
            "text_boxes": [
                {"frame": 3, "text": "AB12", "bbox": [0.1, 0.2, 0.3, 0.25], "role": "target", "score": 1.0},
                {"frame": 15, "text": "x", "bbox": [0.5, 0.5, 0.9, 0.6], "role": "ocr", "score": 0.8},
            ],
        }
        for vid in ("v1", "v2")
    ]


def sample_rows() -> list[dict[str, Any]]:
    return [
        {
            "sample_id": "s1",
            "video": "videos/v1.mp4",
            "question": "What is the code?",
            "answers": ["AB12"],
            "problem_type": "open",
            "options": None,
            "question_kind": "read",
            "source": "synthetic",
            "split": "train",
            "evidence": [
                {"frame": 3, "bbox": [0.1, 0.2, 0.3, 0.25], "text": "AB12", "origin": "ground_truth"}
            ],
            "meta": {"num_frames": 16},
        },
        {
            "sample_id": "s2",
            "video": "videos/v2.mp4",
            "question": "Which colour?",
            "answers": ["B"],
            "problem_type": "multiple_choice",
            "options": ["red", "blue"],
            "question_kind": "compare",
            "source": "synthetic",
            "split": "train",
            "evidence": [],
            "meta": {},
        },
    ]


def _step(thought: str, name: str, arguments: dict[str, Any], images: list[str]) -> dict[str, Any]:
    return {
        "thought": thought,
        "tool_call": {"name": name, "arguments": arguments},
        "observation": {
            "text": "Here you are:",
            "images": images,
            "image_sha256": [SHA] * len(images),
            "error": None,
        },
    }


def _traj(traj_id: str, kind: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "traj_id": traj_id,
        "sample_id": "s1",
        "kind": kind,
        "video": "videos/v1.mp4",
        "frame_indices": [0, 5, 10, 15],
        "num_source_frames": 16,
        "question": "What is the code?",
        "answers": ["AB12"],
        "problem_type": "open",
        "options": None,
        "vision": {"max_pixels": 401408},
        "steps": steps,
        "final_thought": "It reads AB12.",
        "final_answer": "AB12",
    }


def drp_rows() -> list[dict[str, Any]]:
    return [
        _traj(
            "t1",
            "drp_clip",
            [_step("look closer", "clipping", {"target_frames": [1, 4]}, ["obs/0.png", "obs/1.png"])],
        ),
        # 4 frames + 1 crop seen before step 2, so target_image 5 (the first crop) is valid.
        _traj(
            "t2",
            "drp_crop",
            [
                _step(
                    "zoom", "cropping", {"target_image": 2, "bbox_2d": [0.1, 0.2, 0.4, 0.3]}, ["obs/2.png"]
                ),
                _step(
                    "zoom more",
                    "cropping",
                    {"target_image": 5, "bbox_2d": [0.0, 0.0, 1.0, 0.5]},
                    ["obs/3.png"],
                ),
            ],
        ),
    ]


def crp_rows() -> list[dict[str, Any]]:
    row = _traj(
        "c1",
        "crp",
        [
            _step("pick frames", "clipping", {"target_frames": [2, 3]}, ["obs/4.png", "obs/5.png"]),
            _step("zoom", "cropping", {"target_image": 6, "bbox_2d": [0.2, 0.2, 0.6, 0.4]}, ["obs/6.png"]),
        ],
    )
    return [row, _traj("c2", "crp", [])]


def rl_rows(mode: str) -> list[dict[str, Any]]:
    rows = sample_rows()
    for r in rows:
        r.update(tool_mode=mode, frame_indices=[0, 4, 8, 12], num_source_frames=16)
    return rows


VALID = {
    "videos": video_rows,
    "samples": sample_rows,
    "sft_drp": drp_rows,
    "sft_crp": crp_rows,
    "rl_d": lambda: rl_rows("single"),
    "rl_c": lambda: rl_rows("mixed"),
    "review": lambda: [
        {"traj_id": "drp-000001", "decision": "reject", "digest": "a" * 64, "note": "reads the wrong panel"},
        {"traj_id": "crp-000007", "decision": "accept", "digest": "b" * 64, "note": ""},
    ],
    "splits": sample_rows,
}


def check(rows: list[dict[str, Any]], dataset: str, base: Path, **kw: Any):
    return validate_rows(rows, dataset, EXPECTATIONS, base_dir=base, **kw)


def assert_fails(rows: list[dict[str, Any]], dataset: str, base: Path, *needles: str) -> str:
    """Validation fails, require_valid raises, and the summary contains every needle."""
    with pytest.raises(DataValidationError) as exc:
        require_valid(rows, dataset, EXPECTATIONS, base_dir=base)
    report = exc.value.report
    assert report is not None and not report.success
    summary = report.summary()
    assert str(exc.value) == summary
    for needle in needles:
        assert needle in summary, f"{needle!r} not in summary:\n{summary}"
    return summary


# ------------------------------------------------------------------ valid data
@pytest.mark.parametrize("dataset", list(VALID))
def test_valid_rows_pass(dataset: str, base: Path) -> None:
    report = check(VALID[dataset](), dataset, base)
    assert report.success, report.summary()
    assert report.n_rows == 2 and report.n_expectations > (3 if dataset == "splits" else 10)
    assert "OK" in report.summary()


def test_jsonl_with_paths_relative_to_cwd(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(base)
    path = base / "data" / "sft_crp.jsonl"
    write_jsonl(path, crp_rows())
    report = require_valid(path, "sft_crp", EXPECTATIONS)
    assert report.success and str(path) in report.dataset


def test_every_suite_column_exists_in_its_table(base: Path) -> None:
    # Guards the suite JSON against drifting from the table builders.
    for dataset in DATASETS:
        spec = json.loads((EXPECTATIONS / f"{dataset}.json").read_text())
        tables = build_tables(VALID[dataset](), dataset, base)
        assert set(spec) == set(tables), dataset
        for table, suite in spec.items():
            for exp in suite["expectations"]:
                kw = exp["kwargs"]
                for col in [
                    kw.get("column"),
                    kw.get("column_A"),
                    kw.get("column_B"),
                    *kw.get("column_set", []),
                ]:
                    if col is not None:
                        assert col in tables[table].columns, (dataset, table, col)


# ------------------------------------------------------------------ broken data
@pytest.mark.parametrize("split", ["test", "val"])
def test_a_video_in_two_splits_fails_the_splits_suite(base: Path, split: str) -> None:
    rows = VALID["splits"]()
    rows.append(
        {**rows[1], "sample_id": "s9", "split": split}
    )  # v2's questions in train and in another split
    assert_fails(rows, "splits", base, "the splits are disjoint", "videos/v2.mp4")


def test_duplicate_ids(base: Path) -> None:
    rows = video_rows()
    rows[1]["video_id"] = "v1"
    assert_fails(rows, "videos", base, "expect_column_values_to_be_unique(video_id)", "video_id='v1'")
    rows = drp_rows()
    rows[1]["traj_id"] = "t1"
    assert_fails(rows, "sft_drp", base, "expect_column_values_to_be_unique(traj_id)", "2 of 2 rows failed")


def test_box_out_of_unit_square(base: Path) -> None:
    rows = sample_rows()
    rows[0]["evidence"][0]["bbox"] = [0.1, 0.2, 1.4, 0.3]
    summary = assert_fails(
        rows,
        "samples",
        base,
        "[evidence] expect_column_values_to_be_between(x2)",
        "sample_id='s1' evidence=0: x2=1.4",
    )
    assert "1 of 1 rows failed" in summary

    rows = crp_rows()
    rows[0]["steps"][1]["tool_call"]["arguments"]["bbox_2d"] = [-0.1, 0.2, 0.5, 0.4]
    assert_fails(
        rows,
        "sft_crp",
        base,
        "[steps] expect_column_values_to_be_between(x1)",
        "traj_id='c1' step=1: x1=-0.1",
    )


def test_inverted_boxes(base: Path) -> None:
    rows = video_rows()
    rows[1]["text_boxes"][0]["bbox"] = [0.3, 0.2, 0.3, 0.25]  # x1 == x2
    assert_fails(
        rows,
        "videos",
        base,
        "expect_column_pair_values_a_to_be_greater_than_b(x2, x1)",
        "video_id='v2' box=0: x2=0.3, x1=0.3",
    )
    rows = drp_rows()
    rows[1]["steps"][0]["tool_call"]["arguments"]["bbox_2d"] = [0.1, 0.5, 0.4, 0.3]
    assert_fails(rows, "sft_drp", base, "(y2, y1)", "traj_id='t2' step=0")


def test_malformed_box(base: Path) -> None:
    rows = drp_rows()
    rows[1]["steps"][0]["tool_call"]["arguments"]["bbox_2d"] = [0.1, 0.5, 0.4]
    assert_fails(
        rows, "sft_drp", base, "expect_column_values_to_be_null(args_error)", "must be a list of 4 numbers"
    )


def test_tool_arguments_follow_the_protocols_rule(base: Path) -> None:
    # the tools' own check (protocol.check_arguments), not a second rule set
    rows = drp_rows()
    rows[0]["steps"][0]["tool_call"]["arguments"]["zoom"] = 2
    rows[1]["steps"][0]["tool_call"]["arguments"]["target_image"] = True
    assert_fails(
        rows,
        "sft_drp",
        base,
        "unexpected argument(s) for clipping: zoom",
        "'target_image' must be an integer",
    )
    rows = drp_rows()
    rows[0]["steps"][0]["tool_call"]["arguments"]["target_frames"] = []
    assert_fails(rows, "sft_drp", base, "'target_frames' must be a non-empty list of integers")
    rows = drp_rows()
    rows[0]["steps"][0]["tool_call"]["arguments"]["target_frames"] = 4  # the tools read a bare frame number
    tables = build_tables(rows, "sft_drp", base)
    assert tables["steps"]["args_error"].isna().all() and tables["clip_targets"]["target"].tolist() == [4.0]
    assert rows[0]["steps"][0]["tool_call"]["arguments"]["target_frames"] == 4  # the row is left as it is


def test_frame_indices_out_of_range(base: Path) -> None:
    rows = video_rows()
    rows[0]["text_boxes"][1]["frame"] = 16  # num_frames is 16
    assert_fails(
        rows, "videos", base, "text box frame < num_frames", "video_id='v1' box=1: num_frames=16, frame=16"
    )

    rows = rl_rows("single")
    rows[0]["evidence"][0]["frame"] = 99
    rows[1]["frame_indices"][2] = -1
    assert_fails(
        rows,
        "rl_d",
        base,
        "[evidence]",
        "sample_id='s1' evidence=0: num_frames=16, frame=99",
        "[frames] expect_column_values_to_be_between(frame_index)",
        "sample_id='s2' position=3: frame_index=-1",
    )


def test_tool_targets_out_of_range(base: Path) -> None:
    rows = drp_rows()
    rows[0]["steps"][0]["tool_call"]["arguments"]["target_frames"] = [1, 5]  # only 4 frames shown
    assert_fails(rows, "sft_drp", base, "[clip_targets]", "traj_id='t1' step=0: n_frames_shown=4, target=5")

    rows = drp_rows()
    rows[0]["steps"][0]["tool_call"]["arguments"]["target_frames"] = [1, 2, 3, 4, 1, 2, 3, 4, 1]
    assert_fails(rows, "sft_drp", base, "clipping selects 1..8 frames", "n_targets=9")

    rows = drp_rows()
    rows[1]["steps"][1]["tool_call"]["arguments"]["target_image"] = 6  # only 5 images seen
    assert_fails(
        rows,
        "sft_drp",
        base,
        "images seen before the step",
        "traj_id='t2' step=1: images_before=5, crop_target=6",
    )


def test_unknown_tool(base: Path) -> None:
    rows = crp_rows()
    rows[0]["steps"][0]["tool_call"]["name"] = "zoom"
    assert_fails(
        rows, "sft_crp", base, "expect_column_values_to_be_in_set(tool_name)", "step=0: tool_name='zoom'"
    )


def test_empty_answers(base: Path) -> None:
    rows = sample_rows()
    rows[1]["answers"] = []
    assert_fails(rows, "samples", base, "(n_answers)", "sample_id='s2': n_answers=0")
    rows = drp_rows()
    rows[0]["answers"] = ["  "]
    rows[1]["final_answer"] = ""
    assert_fails(
        rows,
        "sft_drp",
        base,
        "traj_id='t1': n_answers=0",
        "final_answer is not blank",
        "traj_id='t2': final_answer_chars=0",
    )


def test_missing_files(base: Path) -> None:
    rows = sample_rows()
    rows[0]["video"] = "videos/nope.mp4"
    assert_fails(
        rows, "samples", base, "video file exists", "sample_id='s1': missing_video='videos/nope.mp4'"
    )
    rows = crp_rows()
    rows[0]["steps"][1]["observation"]["images"] = ["obs/missing.png"]
    assert_fails(
        rows,
        "sft_crp",
        base,
        "observation image file exists",
        "traj_id='c1' step=1 image=0: missing_path='obs/missing.png'",
    )


def test_video_given_as_page_images(base: Path) -> None:
    rows = crp_rows()
    rows[0]["video"] = ["obs/0.png", "obs/1.png"]
    assert check(rows, "sft_crp", base).success
    rows[1]["video"] = ["obs/0.png", "pages/gone.png"]
    assert_fails(rows, "sft_crp", base, "traj_id='c2': missing_video='pages/gone.png'")


def test_drp_mixing_tools(base: Path) -> None:
    rows = drp_rows()
    rows[0]["steps"].append(_step("zoom", "cropping", {"target_image": 1, "bbox_2d": [0, 0, 0.5, 0.5]}, []))
    assert_fails(
        rows,
        "sft_drp",
        base,
        "DRP trajectory uses exactly one tool kind",
        "traj_id='t1': tools_used='clipping+cropping'",
    )
    # The same trajectory is fine as CRP data.
    rows[0]["kind"] = "crp"
    rows[1]["kind"] = "crp"
    assert check(rows, "sft_crp", base).success


def test_kind_and_tool_mode_per_dataset(base: Path) -> None:
    assert_fails(crp_rows(), "sft_drp", base, "expect_column_values_to_be_in_set(kind)", "kind='crp'")
    assert_fails(rl_rows("mixed"), "rl_d", base, "tool_mode is single", "sample_id='s1': tool_mode='mixed'")


def test_missing_column(base: Path) -> None:
    rows = drp_rows()
    for r in rows:
        del r["final_answer"]
    summary = assert_fails(
        rows, "sft_drp", base, "expect_table_columns_to_match_set(final_answer)", "missing from every row"
    )
    # The not-null check on the absent column is folded into the schema failure, not crashed.
    assert "1 expectation(s) on them could not run" in summary
    assert summary.splitlines()[1].startswith("  - [trajectories] expect_table_columns_to_match_set")


def test_missing_field_in_one_row_and_wrong_types(base: Path) -> None:
    rows = video_rows()
    del rows[1]["fps"]
    rows[0]["width"] = "wide"
    assert_fails(
        rows,
        "videos",
        base,
        "expect_column_values_to_not_be_null(fps)",
        "video_id='v2': fps=None",
        "numeric fields are numbers",
        "video_id='v1': numeric_errors=\"width='wide'\"",
    )


def test_rows_that_are_not_objects(base: Path) -> None:
    assert_fails(
        [*sample_rows(), ["not", "a", "dict"]],
        "samples",
        base,
        "rows_are_objects",
        "row 3: ['not', 'a', 'dict']",
    )


def test_empty_dataset(base: Path, tmp_path: Path) -> None:
    summary = assert_fails([], "sft_crp", base, "dataset is empty")
    assert summary.startswith("sft_crp: FAILED")
    report = check([], "sft_crp", base, allow_empty=True)
    assert report.success and report.n_rows == 0
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert validate_jsonl(path, "videos", EXPECTATIONS, allow_empty=True).success
    with pytest.raises(DataValidationError, match="dataset is empty"):
        require_valid(path, "videos", EXPECTATIONS)


def test_examples_are_capped(base: Path) -> None:
    rows = [copy.deepcopy(sample_rows()[0]) for _ in range(6)]
    for i, r in enumerate(rows):
        r["sample_id"] = f"s{i}"
        r["problem_type"] = "essay"
    summary = check(rows, "samples", base).summary()
    assert "6 of 6 rows failed" in summary
    assert "sample_id='s2'" in summary and "sample_id='s3'" not in summary


def test_unknown_dataset_is_an_error(base: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        check([], "nope", base)
