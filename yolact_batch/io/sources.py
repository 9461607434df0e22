"""Inputs of a batch job: list every image once, and account for every entry that is not one.

Listing runs on the driver, before any cluster work; it turns one input URL into a table
of work items (``ITEM_SCHEMA``), one row per image, sorted by ``image_uri``, and an account
of every entry it does not read (``Listing.skipped``, reasons in ``yolact_batch.io.inventory``):

============  =========================================================  ===========
input         what is listed                                             ``kind``
============  =========================================================  ===========
directory,    every image file below it, recursively: suffixes OpenCV    ``file``
prefix, glob  reads (``IMAGE_SUFFIXES``; ``SourceOptions.image_suffixes``)
manifest      one image URI per line (``.txt``/``.lst``/``.manifest``);   ``file``
              ``URI<TAB>image_id`` also accepted; nothing is listed
tar shards    each image member of WebDataset-style ``.tar`` files,       ``range``
              located by byte offset (one ranged read per image)
Parquet       each row of ``.parquet`` files with an image-bytes column   ``parquet``
COCO          ``images[]`` of an annotation ``.json``, under              ``file``
              ``image_root``; COCO ``image_id``s are kept
============  =========================================================  ===========

A path that exists is read as a path, even with ``*?[`` in it; only a path that does not
exist is tried as a glob pattern. One file is one image: local paths are normalised
(``//``, ``/./``, ``file://``, links to a listed file), so two spellings never make two rows.

The bytes of the work items are fetched by ``yolact_batch.io.reads.fetch``. Nothing here imports Ray.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from typing import Callable, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from yolact_batch.core.preprocess import decodable_suffixes
from yolact_batch.io.inventory import InputError, Skipped, glob_files, is_regular, walk
from yolact_batch.io.manifests import manifest_entries
from yolact_batch.io.storage import PERMANENT, StorageOptions, StorageUnavailable, filesystem, is_local, retry

IMAGE_SUFFIXES = decodable_suffixes()
MANIFEST_SUFFIXES = (".txt", ".lst", ".manifest")
PARQUET_SUFFIXES = (".parquet", ".pq")
TAR_SUFFIXES = (".tar",)
FORMATS = ("auto", "images", "manifest", "tar", "parquet", "coco")
# COCO file names: 12 digits, optionally after the 2014 prefix (COCO_val2014_000000184324.jpg).
_COCO_NAME = re.compile(r"(?:COCO_[a-z]+[0-9]{4}_)?([0-9]{12})\.[A-Za-z0-9]+")
_GLOB = re.compile(r"[*?[]")

ITEM_SCHEMA = pa.schema(
    [
        ("image_uri", pa.string()),  # the row's identity in the output
        ("image_id", pa.int64()),  # COCO id when known
        ("kind", pa.string()),  # "file" | "range" | "parquet"
        ("source", pa.string()),  # URL to read: the image, the tar shard or the Parquet file
        ("member", pa.string()),  # tar member name, or the Parquet image column
        ("offset", pa.int64()),  # tar: data offset; Parquet: row group
        ("length", pa.int64()),  # tar: data size; Parquet: row within the row group
    ]
)


# Listing errors that retrying cannot fix (InputError is a ValueError, hence in PERMANENT).
_LISTING_PERMANENT = (*PERMANENT, tarfile.TarError, pa.ArrowException, UnicodeDecodeError)


@dataclass(frozen=True)
class SourceOptions:
    """How to read the input.

    Attributes:
        format: ``"auto"`` (from the URL: suffix, or what a directory holds) or one of
            ``images``, ``manifest``, ``tar``, ``parquet``, ``coco``.
        image_root: COCO: directory or prefix the annotation's ``file_name``s are under.
        image_column: Parquet: the image-bytes column (binary, or a struct with a
            ``bytes`` field as Hugging Face datasets write); default: the only such column.
        uri_column: Parquet: string column naming each image; default ``FILE#row=N``.
        id_column: Parquet: integer image-id column; default ``image_id`` when present.
        image_suffixes: file suffixes listed as images in folders and tar shards
            (lower case, with the dot); None: ``IMAGE_SUFFIXES``, what this OpenCV reads.
    """

    format: str = "auto"
    image_root: str | None = None
    image_column: str | None = None
    uri_column: str | None = None
    id_column: str | None = None
    image_suffixes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown input format {self.format!r}; expected one of {list(FORMATS)}")
        bad = [s for s in self.image_suffixes or () if not re.fullmatch(r"\.[a-z0-9]+", s)]
        if bad or self.image_suffixes == ():
            raise InputError(f"image suffixes must be lower-case like '.jpg' and at least one, got {bad or '[]'}")

    @property
    def suffixes(self) -> tuple[str, ...]:
        return self.image_suffixes if self.image_suffixes is not None else IMAGE_SUFFIXES


def image_suffixes(spec: str) -> tuple[str, ...]:
    """Suffixes from a ``--image-suffixes`` value: ``.jpg,.png`` (exactly these), or changes to
    the default: ``+.heic`` adds, ``-.gif`` removes (``+.heic,-.gif``)."""
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    if all(p[0] in "+-" for p in parts):
        found = set(IMAGE_SUFFIXES)
        for p in parts:
            name = p[1:] if p[1:].startswith(".") else "." + p[1:]
            found = found | {name} if p[0] == "+" else found - {name}
        return tuple(sorted(found))
    if any(p[0] in "+-" for p in parts):
        raise InputError(
            f"--image-suffixes {spec!r}: give either a list (.jpg,.png) or changes (+.heic,-.gif), not both"
        )
    return tuple(sorted({p if p.startswith(".") else "." + p for p in parts}))


@dataclass(frozen=True)
class Listing:
    """What ``list_inputs`` found.

    Attributes:
        items: work items (``ITEM_SCHEMA``), one per image, sorted by ``image_uri``.
        skipped: entries of the input not read, by reason, with example names.
        ids_dropped: images whose name-derived ``image_id`` another image shares: set to null.
    """

    items: pa.Table
    skipped: Skipped = field(default_factory=Skipped)
    ids_dropped: int = 0


def image_id_from_name(name: str) -> int | None:
    """The COCO image id an unambiguous COCO file name carries: ``000000184324.jpg``,
    ``COCO_val2014_000000184324.jpg``, also as the last part of a path, URL or tar member;
    None for any other name (``2023.01.05.jpg``, ``12.jpg``, ``².jpg``)."""
    match = _COCO_NAME.fullmatch(posixpath.basename(name.rpartition("#")[2]))
    return int(match.group(1)) if match else None


def list_inputs(
    url: str,
    options: SourceOptions = SourceOptions(),
    storage: StorageOptions = StorageOptions(),
    limit: int | None = None,
    exclude: tuple[str, ...] = (),
) -> Listing:
    """Work items for every image of ``url``, and every entry not read, by reason.

    ``limit`` keeps the first ``limit`` images of the sorted order, so a rerun with the same
    limit finishes the same set. ``exclude``: folders (URLs) never listed, e.g. the job's output.
    Storage failures are retried (``storage.retry``).

    Raises:
        InputError: missing or unreadable input, nothing to process, or an ambiguous format.
        StorageUnavailable: the storage failed for longer than its retry window.
    """
    fs, path = _fs(url, storage)

    def attempt() -> tuple[list[dict], str, Skipped]:
        skipped = Skipped()
        files, fmt = _resolve(fs, url, path, options, exclude, skipped)
        lister: Callable[..., Iterable[dict]] = {
            "images": _image_items,
            "manifest": _manifest_items,
            "tar": _tar_items,
            "parquet": _parquet_items,
            "coco": _coco_items,
        }[fmt]
        return list(lister(fs, url, files, options, storage, skipped)), fmt, skipped

    try:
        rows, fmt, skipped = retry(attempt, f"listing {url}", storage.retry_window_s, permanent=_LISTING_PERMANENT)
    except (InputError, StorageUnavailable):
        raise
    except FileNotFoundError as exc:
        raise InputError(f"input {url}: not found ({exc})") from None
    except (OSError, ValueError, tarfile.TarError, pa.ArrowException) as exc:
        raise InputError(f"input {url}: cannot be read ({type(exc).__name__}: {exc})") from None
    rows = _unique(rows, url, skipped)
    if not rows:
        raise InputError(
            f"input {url}: no images to process (format {fmt}; image suffixes {', '.join(options.suffixes)})"
            + (f"; skipped {skipped.line()}" if skipped.total else "")
        )
    dropped = _drop_shared_ids(rows)
    table = pa.Table.from_pylist(rows, schema=ITEM_SCHEMA).sort_by("image_uri")
    return Listing(table.slice(0, limit) if limit is not None else table, skipped, dropped)


def _unique(rows: list[dict], url: str, skipped: Skipped) -> list[dict]:
    """One row per image: a file named twice (two manifest lines, two spellings) is read once;
    a tar member or Parquet row named twice is ambiguous."""
    seen: set[str] = set()
    out = []
    for row in rows:
        uri = row["image_uri"]
        if uri not in seen:
            seen.add(uri)
            out.append(row)
        elif row["kind"] == "file":
            skipped.add("listed more than once", uri)
        else:
            raise InputError(f"input {url}: {uri} is listed more than once; each image must appear once")
    return out


def _drop_shared_ids(rows: list[dict]) -> int:
    """Ids are unique per output or absent: a name-derived id another row also has becomes null."""
    counts: dict[int, int] = {}
    for row in rows:
        if row["image_id"] is not None:
            counts[row["image_id"]] = counts.get(row["image_id"], 0) + 1
    dropped = 0
    for row in rows:
        if row.pop("named") and counts.get(row["image_id"], 0) > 1:
            row["image_id"] = None
            dropped += 1
    return dropped


def _fs(url: str, storage: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return filesystem(url, storage)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{url}: no filesystem for this URL ({exc}); for gs:// install gcsfs") from None


def _uri(fs: fsspec.AbstractFileSystem, url: str, path: str) -> str:
    """Full URL of ``path``; plain local paths stay plain when the input was given as one."""
    if "://" not in url:
        return path
    return fs.unstrip_protocol(path)


def _suffix(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def _resolve(
    fs, url: str, path: str, options: SourceOptions, exclude: tuple[str, ...], skipped: Skipped
) -> tuple[list[str], str]:
    """The files of the input and its format; entries not read go to ``skipped``."""
    if fs.isfile(path):
        _check_regular(fs, url, path)
        files, folder = [path], False
    elif fs.isdir(path):
        files, folder = walk(fs, path, exclude, skipped), True
        if not files and not skipped.total:
            raise InputError(f"input {url}: the directory is empty")
    elif is_local(fs) and os.path.lexists(path):
        if os.path.exists(path):
            _check_regular(fs, url, path)
        raise InputError(f"input {url}: a dangling link (its target does not exist); give a file or folder of images")
    elif _GLOB.search(path):  # only a path that does not exist is a pattern
        files, folder = glob_files(fs, path, skipped), True
        if not files:
            raise InputError(f"input {url}: no such file or directory, and as a pattern it matches no files")
    else:
        raise InputError(f"input {url}: no such file or directory")
    fmt = options.format
    if fmt == "coco" and options.image_root is None:
        raise InputError(
            f"input {url}: COCO input needs --image-root: the directory or prefix its file_name entries are under"
        )
    if fmt in ("manifest", "coco"):
        return files, fmt
    by_kind = {
        "images": _keep(files, options.suffixes),
        "tar": _keep(files, TAR_SUFFIXES),
        "parquet": _keep(files, PARQUET_SUFFIXES),
    }
    if fmt == "auto" and not folder:
        for kind, suffixes in (("manifest", MANIFEST_SUFFIXES), ("coco", (".json",))):
            if _keep(files, suffixes):
                if kind == "coco" and options.image_root is None:
                    raise InputError(f"input {url}: a COCO annotation file needs --image-root (where its images are)")
                return files, kind
    if fmt == "auto":
        fmt = next((kind for kind in ("images", "tar", "parquet") if by_kind[kind]), None)
        if fmt is None:
            if any(f.endswith((".tar.gz", ".tgz")) for f in files):
                raise InputError(f"input {url}: compressed tar shards cannot be read by offset; use uncompressed .tar")
            raise InputError(
                f"input {url}: cannot tell what to read (no {', '.join(options.suffixes)} images, .tar shards or "
                ".parquet files" + (f"; skipped {skipped.line()}" if skipped.total else "") + "); pass --input-format"
                " or --image-suffixes"
            )
    if fmt == "images" and not folder:  # a file named as an image is read as one, whatever its suffix
        return files, fmt
    chosen = set(by_kind[fmt])
    base = path.rstrip("/")
    for f in files:
        if f not in chosen:
            skipped.add(_not_read(f, fmt, options), posixpath.relpath(f, base) if folder else f)
    return by_kind[fmt], fmt


def _not_read(path: str, fmt: str, options: SourceOptions) -> str:
    """The skip reason of a file the chosen format does not read."""
    suffix = _suffix(path)
    if fmt != "tar" and suffix in TAR_SUFFIXES:
        return "tar shard (read shards with --input-format tar)"
    if fmt != "parquet" and suffix in PARQUET_SUFFIXES:
        return "Parquet file (read them with --input-format parquet)"
    if fmt == "images":
        return "not an image suffix (--image-suffixes widens the list)"
    return f"not a {fmt} file"


def _check_regular(fs, url: str, path: str) -> None:
    if is_local(fs) and not is_regular(path):
        raise InputError(f"input {url}: not a regular file (a FIFO, socket or device); give a file or folder of images")


def _keep(files: list[str], suffixes: tuple[str, ...]) -> list[str]:
    return [f for f in files if _suffix(f) in suffixes]


def _item(
    image_uri: str,
    image_id: int | None,
    kind: str,
    source: str,
    member: str | None = None,
    offset: int = -1,
    length: int = -1,
    named: bool = False,
) -> dict:
    """A work item; ``named``: its ``image_id`` came from the name (dropped if another image shares it)."""
    return dict(
        image_uri=image_uri,
        image_id=image_id,
        kind=kind,
        source=source,
        member=member,
        offset=offset,
        length=length,
        named=named and image_id is not None,
    )


def _named(uri: str, kind: str = "file", **kw) -> dict:
    return _item(uri, image_id_from_name(uri), kind, kw.pop("source", uri), named=True, **kw)


def _image_items(fs, url, files, options, storage, skipped):
    for f in files:
        yield _named(_uri(fs, url, f))


def _manifest_items(fs, url, files, options, storage, skipped):
    local_style = "file://" if url.startswith("file://") else ""
    for f in files:
        base = posixpath.dirname(_uri(fs, url, f))
        for uri, image_id in manifest_entries(fs.cat_file(f), f, base, local_style, storage, skipped):
            yield _named(uri) if image_id is None else _item(uri, image_id, "file", uri)


def _tar_items(fs, url, files, options, storage, skipped):
    for f in files:
        uri = _uri(fs, url, f)
        with fs.open(f, "rb", block_size=1 << 16) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if _suffix(member.name) in options.suffixes:
                    yield _named(
                        f"{uri}#{member.name}",
                        "range",
                        source=uri,
                        member=member.name,
                        offset=member.offset_data,
                        length=member.size,
                    )
                else:
                    skipped.add("tar member not an image", f"{posixpath.basename(f)}#{member.name}")


def _parquet_items(fs, url, files, options, storage, skipped):
    for f in files:
        uri = _uri(fs, url, f)
        with fs.open(f, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            column = _image_column(schema, options.image_column, uri)
            id_column = options.id_column or ("image_id" if "image_id" in schema.names else None)
            extra = [c for c in (options.uri_column, id_column) if c]
            for name in extra:
                if name not in schema.names:
                    raise InputError(f"{uri}: no column {name!r} (columns: {schema.names})")
            row = 0
            for group in range(parquet.num_row_groups):
                n = parquet.metadata.row_group(group).num_rows
                meta = parquet.read_row_group(group, columns=extra).to_pydict() if extra else {}
                uris = meta.get(options.uri_column) or [f"{uri}#row={row + i}" for i in range(n)]
                ids = meta.get(id_column) or [None] * n
                for i in range(n):
                    yield _item(str(uris[i]), None if ids[i] is None else int(ids[i]), "parquet", uri, column, group, i)
                row += n


def _image_column(schema: pa.Schema, wanted: str | None, uri: str) -> str:
    def holds_bytes(t: pa.DataType) -> bool:
        return (
            pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and holds_bytes(t.field("bytes").type))
        )

    candidates = [f.name for f in schema if holds_bytes(f.type)]
    if wanted is not None:
        if wanted not in candidates:
            raise InputError(f"{uri}: column {wanted!r} is not an image-bytes column (candidates: {candidates})")
        return wanted
    if len(candidates) != 1:
        raise InputError(f"{uri}: pass --image-column: image-bytes column candidates are {candidates}")
    return candidates[0]


def _coco_items(fs, url, files, options, storage, skipped):
    root = options.image_root.rstrip("/")
    root_fs, root_path = _fs(root, storage)
    for f in files:
        try:
            images = json.loads(fs.cat_file(f))["images"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{_uri(fs, url, f)}: not a COCO annotation file ({exc})") from None
        for image in images:
            name = image["file_name"]
            path = name if "://" in name else posixpath.normpath(posixpath.join(root_path, name))
            uri = name if "://" in name else _uri(root_fs, root, path)
            yield _item(uri, int(image["id"]), "file", uri)
