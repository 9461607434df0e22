"""--class-names: a COCO JSON (ids kept), a text file or a comma list."""

from __future__ import annotations

import json

import pytest

from yolact_batch.io.class_names import ClassNames, read_class_names


def test_coco_json_keeps_ids_in_id_order(tmp_path):
    path = tmp_path / "instances.json"
    categories = [{"id": 30, "name": "hound"}, {"id": 10, "name": "human"}, {"id": 20, "name": "auto"}]
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    assert read_class_names(str(path)) == ClassNames(("human", "auto", "hound"), (10, 20, 30), str(path))


def test_text_file_one_name_per_line(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("cat\n\n  dog  \nbird\n")
    got = read_class_names(str(path))
    assert (got.names, got.category_ids) == (("cat", "dog", "bird"), (1, 2, 3))


def test_comma_list():
    got = read_class_names("cat, dog,bird")
    assert (got.names, got.category_ids, got.origin) == (("cat", "dog", "bird"), (1, 2, 3), "--class-names")
    assert read_class_names("person").names == ("person",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty; write one class name per line"),
        ("cat\ncat\n", "class name 'cat' appears twice"),
    ],
)
def test_bad_text_files(tmp_path, content, message):
    path = tmp_path / "names.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_class_names(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"categories": ', "is not valid JSON"),
        ('{"images": []}', "no COCO 'categories' list"),
        ('{"categories": [{"id": "x", "name": "a"}]}', "integer 'id' and a 'name'"),
        ('{"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}', "category id 1 appears twice"),
    ],
)
def test_bad_coco_files(tmp_path, content, message):
    path = tmp_path / "cats.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_class_names(str(path))
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read class names file .*nope.json: no such file"):
        read_class_names(str(tmp_path / "nope.json"))
    binary = tmp_path / "names.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot read class names file .*names.txt"):
        read_class_names(str(binary))
    with pytest.raises(ValueError, match="empty name"):
        read_class_names("cat,,dog")
