"""Listing every kind of input into work items, and fetching their bytes (no Ray)."""

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.job.conftest import jpeg_images
from yolact_batch.io.reads import fetch
from yolact_batch.io.sources import ITEM_SCHEMA, InputError, SourceOptions, image_id_from_name, list_inputs
from yolact_batch.io.storage import StorageOptions

IMAGES = jpeg_images(4)
NAMES = sorted(IMAGES)


def write_images(folder, names=NAMES):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(IMAGES[name])
    return folder


def fetched(items, storage=StorageOptions()):
    data, errors = fetch(items, storage)
    return dict(zip(items["image_uri"].to_pylist(), data)), dict(zip(items["image_uri"].to_pylist(), errors))


def test_directory_is_listed_recursively_sorted_with_coco_ids(tmp_path):
    root = tmp_path / "in"
    write_images(root / "a", NAMES[:2])
    write_images(root / "b" / "deeper", NAMES[2:])
    (root / "b" / "upper.JPG").write_bytes(IMAGES[NAMES[0]])
    (root / "b" / "frame.webp").write_bytes(b"webp bytes")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"x")
    items = list_inputs(str(root)).items
    assert items.schema == ITEM_SCHEMA
    uris = items["image_uri"].to_pylist()
    assert uris == sorted(uris) and len(uris) == 6
    assert str(root / "b" / "upper.JPG") in uris and str(root / "b" / "frame.webp") in uris
    assert not any(u.endswith((".txt", ".hidden.jpg")) for u in uris)
    ids = dict(zip(uris, items["image_id"].to_pylist()))
    assert ids[str(root / "a" / NAMES[0])] == int(NAMES[0].split(".")[0]) and ids[str(root / "b" / "upper.JPG")] is None
    data, errors = fetched(items)
    assert data[str(root / "a" / NAMES[1])] == IMAGES[NAMES[1]] and not any(errors.values())


def test_file_url_glob_and_limit(tmp_path):
    write_images(tmp_path / "in")
    items = list_inputs(f"file://{tmp_path}/in/*.jpg", limit=3).items
    assert items["image_uri"].to_pylist() == [f"file://{tmp_path}/in/{n}" for n in NAMES[:3]]
    assert fetched(items)[0][f"file://{tmp_path}/in/{NAMES[0]}"] == IMAGES[NAMES[0]]


def test_manifest_relative_absolute_comments_and_ids(tmp_path):
    write_images(tmp_path / "imgs")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# images to label\nimgs/{NAMES[0]}\n\n{tmp_path}/imgs/{NAMES[1]}\t42\nimgs/missing.jpg\n")
    items = list_inputs(str(manifest)).items
    rows = {r["image_uri"]: r["image_id"] for r in items.to_pylist()}
    assert rows == {
        f"{tmp_path}/imgs/{NAMES[0]}": int(NAMES[0][:12]),
        f"{tmp_path}/imgs/{NAMES[1]}": 42,
        f"{tmp_path}/imgs/missing.jpg": None,
    }
    data, errors = fetched(items)
    assert data[f"{tmp_path}/imgs/{NAMES[1]}"] == IMAGES[NAMES[1]]
    assert "not found" in errors[f"{tmp_path}/imgs/missing.jpg"]
    manifest.write_text("a.jpg\tnot-a-number\n")
    with pytest.raises(InputError, match="line 1: image id 'not-a-number'"):
        list_inputs(str(manifest))


def make_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_webdataset_tar_shards_are_read_by_byte_range(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for s, names in enumerate((NAMES[:2], NAMES[2:])):
        members = {}
        for name in names:
            key = name.split(".")[0]
            members[f"{key}.jpg"] = IMAGES[name]
            members[f"{key}.json"] = json.dumps({"caption": "x"}).encode()
        make_tar(shards / f"shard-{s:04d}.tar", members)
    items = list_inputs(str(shards)).items
    assert items["kind"].to_pylist() == ["range"] * 4
    assert items["image_uri"].to_pylist()[0] == f"{shards}/shard-0000.tar#{NAMES[0]}"
    assert items["image_id"].to_pylist() == [int(n[:12]) for n in NAMES]
    data, errors = fetched(items)
    assert [data[f"{shards}/shard-{i // 2:04d}.tar#{n}"] for i, n in enumerate(NAMES)] == [IMAGES[n] for n in NAMES]


def test_parquet_with_image_bytes_uri_and_id_columns(tmp_path):
    table = pa.table(
        {
            "key": [f"img-{i}" for i in range(4)],
            "image_id": pa.array([10, 11, None, 13], pa.int64()),
            "jpeg": pa.array([IMAGES[n] for n in NAMES], pa.binary()),
        }
    )
    pq.write_table(table, tmp_path / "images.parquet", row_group_size=3)
    items = list_inputs(str(tmp_path / "images.parquet"), SourceOptions(uri_column="key")).items
    assert items["image_uri"].to_pylist() == [f"img-{i}" for i in range(4)]
    assert items["image_id"].to_pylist() == [10, 11, None, 13]
    assert items["offset"].to_pylist() == [0, 0, 0, 1]  # row groups of 3
    data, errors = fetched(items)
    assert [data[f"img-{i}"] for i in range(4)] == [IMAGES[n] for n in NAMES]
    default = list_inputs(str(tmp_path / "images.parquet")).items
    assert default["image_uri"].to_pylist()[3] == f"{tmp_path}/images.parquet#row=3"


def test_parquet_hugging_face_image_struct_and_ambiguous_columns(tmp_path):
    image = pa.array([{"bytes": IMAGES[n], "path": n} for n in NAMES])
    pq.write_table(pa.table({"image": image}), tmp_path / "hf.parquet")
    items = list_inputs(str(tmp_path / "hf.parquet")).items
    assert fetched(items)[0][f"{tmp_path}/hf.parquet#row=2"] == IMAGES[NAMES[2]]
    two = pa.table({"a": pa.array([b"1"], pa.binary()), "b": pa.array([b"2"], pa.binary())})
    pq.write_table(two, tmp_path / "two.parquet")
    with pytest.raises(InputError, match=r"pass --image-column: .*\['a', 'b'\]"):
        list_inputs(str(tmp_path / "two.parquet"))
    assert list_inputs(str(tmp_path / "two.parquet"), SourceOptions(image_column="b")).items.num_rows == 1


def test_coco_annotation_carries_image_ids(tmp_path):
    write_images(tmp_path / "val")
    ann = {
        "images": [{"id": 7 + i, "file_name": n, "width": 1, "height": 1} for i, n in enumerate(NAMES)],
        "annotations": [],
        "categories": [],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    items = list_inputs(str(tmp_path / "ann.json"), SourceOptions(image_root=str(tmp_path / "val"))).items
    assert {r["image_uri"]: r["image_id"] for r in items.to_pylist()} == {
        f"{tmp_path}/val/{n}": 7 + i for i, n in enumerate(NAMES)
    }
    with pytest.raises(InputError, match="needs --image-root"):
        list_inputs(str(tmp_path / "ann.json"))


def put(path, text=None):
    """Create ``path`` (a folder when ``text`` is None) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if text is None else path.write_text(text)
    return path


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "missing", "no such file or directory"),
        (lambda d: put(d / "empty"), "the directory is empty"),
        (lambda d: put(d / "t" / "a.csv", "x").parent, "cannot tell what to read"),
        (lambda d: put(d / "m.txt", "# nothing\n"), "no images to process"),
        (lambda d: put(d / "x.json", "[]"), "needs --image-root"),
    ],
    ids=["missing", "empty-dir", "no-images", "empty-manifest", "coco-no-root"],
)
def test_unusable_inputs_fail_with_one_clear_message(tmp_path, setup, message):
    url = str(setup(tmp_path))
    with pytest.raises(InputError, match=message) as info:
        list_inputs(url)
    assert url in str(info.value) or "image-root" in str(info.value)


def test_broken_coco_file_and_compressed_shards_are_explained(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not a COCO annotation file"):
        list_inputs(str(tmp_path / "bad.json"), SourceOptions(image_root=str(tmp_path)))
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "s.tar.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="uncompressed .tar"):
        list_inputs(str(tmp_path / "z"))


def test_a_file_deleted_between_listing_and_reading_is_an_error_not_a_crash(tmp_path):
    write_images(tmp_path / "in")
    items = list_inputs(str(tmp_path / "in")).items
    (tmp_path / "in" / NAMES[1]).unlink()
    (tmp_path / "in" / NAMES[2]).unlink()
    (tmp_path / "in" / NAMES[2]).mkdir()  # replaced by a directory
    data, errors = fetched(items)
    assert "not found (missing from the storage, or deleted after listing)" in errors[str(tmp_path / "in" / NAMES[1])]
    assert errors[str(tmp_path / "in" / NAMES[2])].startswith("read failed")
    assert data[str(tmp_path / "in" / NAMES[0])] == IMAGES[NAMES[0]] and data[str(tmp_path / "in" / NAMES[1])] is None


def test_a_shard_that_shrank_since_listing_gives_error_rows(tmp_path):
    make_tar(tmp_path / "s.tar", {n: IMAGES[n] for n in NAMES})
    items = list_inputs(str(tmp_path / "s.tar")).items
    blob = (tmp_path / "s.tar").read_bytes()
    (tmp_path / "s.tar").write_bytes(blob[: items["offset"].to_pylist()[2] + 10])
    data, errors = fetched(items)
    assert data[f"{tmp_path}/s.tar#{NAMES[0]}"] == IMAGES[NAMES[0]]
    assert (
        "expected" in errors[f"{tmp_path}/s.tar#{NAMES[2]}"]
        and "shard changed" in errors[f"{tmp_path}/s.tar#{NAMES[2]}"]
    )


def test_image_id_from_name():
    assert image_id_from_name("s3://b/val2017/000000184324.jpg") == 184324
    assert image_id_from_name("shard.tar#000000000139.jpg") == 139
    assert image_id_from_name("cat.jpg") is None and image_id_from_name("12.34.jpg") is None


def test_s3_prefix_tar_and_parquet_through_a_real_s3_server(s3_server):
    fs = s3_server.filesystem()
    fs.mkdir("inputs")
    for name in NAMES:
        fs.pipe(f"inputs/images/{name}", IMAGES[name])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in NAMES:
            info = tarfile.TarInfo(name)
            info.size = len(IMAGES[name])
            tar.addfile(info, io.BytesIO(IMAGES[name]))
    fs.pipe("inputs/shards/shard-0000.tar", buffer.getvalue())
    sink = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array([IMAGES[n] for n in NAMES], pa.binary())}), sink)
    fs.pipe("inputs/table/part.parquet", sink.getvalue())
    storage = StorageOptions(endpoint_url=s3_server.endpoint)
    for prefix, first in (
        ("images/", f"s3://inputs/images/{NAMES[0]}"),
        ("shards/", f"s3://inputs/shards/shard-0000.tar#{NAMES[0]}"),
        ("table/", "s3://inputs/table/part.parquet#row=0"),
    ):
        items = list_inputs(f"s3://inputs/{prefix}", storage=storage).items
        assert items.num_rows == 4 and items["image_uri"].to_pylist()[0] == first
        data, errors = fetched(items, storage)
        assert data[first] == IMAGES[NAMES[0]] and not any(errors.values())
    with pytest.raises(InputError, match="s3://inputs/nothing-here/: no such file or directory"):
        list_inputs("s3://inputs/nothing-here/", storage=storage)
