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
