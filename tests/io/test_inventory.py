"""Walking a local folder: every entry is listed or counted under one reason (real files, links, FIFOs)."""

import os

import pytest

from yolact_batch.io.inventory import EXAMPLES, Skipped, walk_local


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    """A folder holding one entry of each kind the walk must account for."""
    root = tmp_path / "in"
    touch(root / "a.jpg")
    touch(root / "sub" / "b.jpg")
    touch(root / "._a.jpg", b"\0\5\x16\7 AppleDouble")  # macOS resource fork beside a.jpg
    touch(root / ".DS_Store")
    touch(root / ".git" / "config")
    os.mkfifo(root / "fifo.jpg")
    os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
    os.symlink("self.jpg", root / "self.jpg")  # a link to itself: ELOOP
    os.symlink(root / "sub", root / "alias")  # a second way into sub/
    os.symlink(root, root / "sub" / "up")  # a loop
    os.link(root / "a.jpg", root / "hard.jpg")
    outside = touch(tmp_path / "elsewhere" / "c.jpg").parent
    os.symlink(outside, root / "linked")  # a folder outside the tree: walked
    (root / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"x")  # not UTF-8
    touch(root / "out" / "overlays" / "a.png")
    return root


def test_every_entry_is_listed_or_counted_with_its_reason(tree):
    files, skipped = walk_local(str(tree), exclude=(str(tree / "out"),))
    assert files == [str(tree / "a.jpg"), str(tree / "linked" / "c.jpg"), str(tree / "sub" / "b.jpg")]
    assert skipped.to_dict() == {
        "dangling link": {"count": 1, "examples": ["dangling.jpg"]},
        "hidden": {"count": 3, "examples": [".DS_Store", "._a.jpg", ".git/"]},
        "inside the output": {"count": 1, "examples": ["out/"]},
        "link to a listed folder": {"count": 2, "examples": ["alias/", "sub/up/"]},
        "name not UTF-8": {"count": 1, "examples": ["bad\\xff.jpg"]},
        "same file": {"count": 1, "examples": ["hard.jpg"]},
        "special file": {"count": 1, "examples": ["fifo.jpg"]},
        "unreadable link": {"count": 1, "examples": ["self.jpg"]},
    }


def test_the_real_path_wins_over_a_link_to_it(tmp_path):
    touch(tmp_path / "z_real" / "a.jpg")
    os.symlink(tmp_path / "z_real", tmp_path / "a_link")  # sorts first, still the one skipped
    os.symlink(tmp_path / "z_real" / "a.jpg", tmp_path / "b.jpg")
    files, skipped = walk_local(str(tmp_path))
    assert files == [str(tmp_path / "z_real" / "a.jpg")]
    assert skipped.counts == {"link to a listed folder": 1, "same file": 1}


def test_skipped_keeps_a_few_examples_and_every_count():
    skipped = Skipped()
    for i in range(EXAMPLES + 4):
        skipped.add("hidden", f".f{i}")
    other = Skipped()
    other.add("hidden", ".g")
    other.add("special file", "p")
    skipped.merge(other)
    assert skipped.counts == {"hidden": EXAMPLES + 5, "special file": 1} and skipped.total == EXAMPLES + 6
    assert skipped.examples["hidden"] == [f".f{i}" for i in range(EXAMPLES)]
    assert skipped.line() == f"{EXAMPLES + 5} hidden (.f0, .f1, .f2), 1 special file (p)"
    assert Skipped().line() == "" and Skipped().to_dict() == {}
