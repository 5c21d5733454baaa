import pytest

from videor4.core.io import atomic_dir, atomic_write_text, read_jsonl, write_jsonl


def test_atomic_dir_swaps_in_only_complete_output(tmp_path):
    out = tmp_path / "built"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["built"]


def test_atomic_dir_removes_what_a_killed_build_left(tmp_path):
    stale = tmp_path / ".built.building-abc123"
    stale.mkdir()
    (stale / "x").write_text("partial")
    with atomic_dir(tmp_path / "built") as tmp:
        (tmp / "a.txt").write_text("new")
    assert not stale.exists() and (tmp_path / "built" / "a.txt").read_text() == "new"


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_text(path, "old")

    def rows():
        yield {"a": 1}
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        write_jsonl(path, rows())
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{broken\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_json_value_checks_and_line_parsing(tmp_path):
    from videor4.core.io import is_int, is_number, parse_json_lines

    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(0.5) and is_number(2) and not is_number(False)
    assert not any(is_number(v) for v in (float("nan"), float("inf"), "1"))
    text = '{"a": 1}\n\n  not json\n{"b": "x\u2028y"}\n'
    assert parse_json_lines(text, "f", strict=False) == ([{"a": 1}, {"b": "x\u2028y"}], [3])
    with pytest.raises(ValueError, match=r"f:3: not valid JSON"):
        parse_json_lines(text, "f")
    write_jsonl(tmp_path / "u.jsonl", [{"text": "line\u2028separator"}])  # written raw (ensure_ascii=False)
    assert read_jsonl(tmp_path / "u.jsonl") == [{"text": "line\u2028separator"}]
