"""Inputs of a batch job: list every image once, then fetch the bytes of any of them.

Listing runs on the driver, before any cluster work; it turns one input URL into a table
of work items (``ITEM_SCHEMA``), one row per image, sorted by ``image_uri``:

============  =========================================================  ===========
input         what is listed                                             ``kind``
============  =========================================================  ===========
directory,    every image file below it, recursively (``IMAGE_SUFFIXES``) ``file``
prefix, glob
manifest      one image URI per line (``.txt``/``.lst``/``.manifest``);   ``file``
              ``URI<TAB>image_id`` also accepted; nothing is listed
tar shards    each image member of WebDataset-style ``.tar`` files,       ``range``
              located by byte offset (one ranged read per image)
Parquet       each row of ``.parquet`` files with an image-bytes column   ``parquet``
COCO          ``images[]`` of an annotation ``.json``, under              ``file``
              ``image_root``; COCO ``image_id``s are kept
============  =========================================================  ===========

Fetching (``fetch``) runs in the I/O stage of the pipeline and never raises for one
image: a file deleted since listing, a short tar member or an unreadable row becomes an
error string naming the cause. Transient storage errors are retried with backoff first.
Nothing here imports Ray.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yolact_batch.io.schema import failure_text
from yolact_batch.io.storage import StorageOptions, filesystem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".txt", ".lst", ".manifest")
PARQUET_SUFFIXES = (".parquet", ".pq")
T = TypeVar("T")
FORMATS = ("auto", "images", "manifest", "tar", "parquet", "coco")

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
# Errors that retrying cannot fix: the image becomes an error row at once.
_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError, KeyError)


class InputError(ValueError):
    """The input cannot be listed (missing, unreadable, empty, ambiguous); names the fix."""


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
    """

    format: str = "auto"
    image_root: str | None = None
    image_column: str | None = None
    uri_column: str | None = None
    id_column: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown input format {self.format!r}; expected one of {list(FORMATS)}")


def image_id_from_name(name: str) -> int | None:
    """COCO-style names (``000000184324.jpg``, ``x/000000184324.jpg``) carry their image id."""
    stem = posixpath.basename(name.rpartition("#")[2]).split(".")[0]
    return int(stem) if stem.isdigit() and len(stem) < 19 else None


def list_inputs(
    url: str,
    options: SourceOptions = SourceOptions(),
    storage: StorageOptions = StorageOptions(),
    limit: int | None = None,
) -> pa.Table:
    """Work items (``ITEM_SCHEMA``) for every image of ``url``, sorted by ``image_uri``.

    ``limit`` keeps the first ``limit`` images of that order, so a rerun with the same
    limit finishes the same set.

    Raises:
        InputError: missing or unreadable input, nothing to process, or an ambiguous format.
    """
    fs, path = _fs(url, storage)
    try:
        files, fmt = _resolve(fs, url, path, options)
        lister: Callable[..., Iterable[dict]] = {
            "images": _image_items,
            "manifest": _manifest_items,
            "tar": _tar_items,
            "parquet": _parquet_items,
            "coco": _coco_items,
        }[fmt]
        rows = list(lister(fs, url, files, options, storage))
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"input {url}: not found ({exc})") from None
    except (OSError, ValueError, tarfile.TarError, pa.ArrowException) as exc:
        raise InputError(f"input {url}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise InputError(
            f"input {url}: no images to process (format {fmt}; image suffixes {', '.join(IMAGE_SUFFIXES)})"
        )
    table = pa.Table.from_pylist(rows, schema=ITEM_SCHEMA).sort_by("image_uri")
    uris = table["image_uri"]
    if pc.count_distinct(uris).as_py() != len(uris):
        raise InputError(f"input {url}: lists some images more than once; each image must appear once")
    return table.slice(0, limit) if limit is not None else table


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


def _resolve(fs, url: str, path: str, options: SourceOptions) -> tuple[list[str], str]:
    """The files of the input and its format."""
    if any(ch in path for ch in "*?["):
        files = sorted(p for p in fs.glob(path) if fs.isfile(p))
        if not files:
            raise InputError(f"input {url}: the pattern matches no files")
    elif fs.isfile(path):
        files = [path]
    elif fs.isdir(path):
        files = sorted(p for p in fs.find(path) if not posixpath.basename(p).startswith("."))
        if not files:
            raise InputError(f"input {url}: the directory is empty")
    else:
        raise InputError(f"input {url}: no such file or directory")
    if options.format != "auto":
        if options.format == "coco" and options.image_root is None:
            raise InputError("COCO input needs --image-root: the directory or prefix its file_name entries are under")
        return (_keep(files, IMAGE_SUFFIXES) if options.format == "images" else files), options.format
    by_kind = {
        "images": _keep(files, IMAGE_SUFFIXES),
        "tar": _keep(files, (".tar",)),
        "parquet": _keep(files, PARQUET_SUFFIXES),
        "manifest": _keep(files, MANIFEST_SUFFIXES),
        "coco": _keep(files, (".json",)),
    }
    single = len(files) == 1 and not fs.isdir(path)
    for kind in ("images", "tar", "parquet") + (("manifest", "coco") if single else ()):
        if by_kind[kind]:
            if kind == "coco" and options.image_root is None:
                raise InputError(f"input {url}: a COCO annotation file needs --image-root (where its images are)")
            return by_kind[kind], kind
    if any(f.endswith((".tar.gz", ".tgz")) for f in files):
        raise InputError(f"input {url}: compressed tar shards cannot be read by offset; use uncompressed .tar")
    raise InputError(
        f"input {url}: cannot tell what to read (no {', '.join(IMAGE_SUFFIXES)} images, .tar shards or "
        ".parquet files); pass --input-format"
    )


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
) -> dict:
    return dict(
        image_uri=image_uri, image_id=image_id, kind=kind, source=source, member=member, offset=offset, length=length
    )


def _join(base: str, relative: str) -> str:
    """``base/relative`` normalised (``./a.jpg`` and ``a.jpg`` are one image), keeping ``s3://``."""
    protocol, sep, path = base.rpartition("://")
    return f"{protocol}{sep}{posixpath.normpath(posixpath.join(path, relative))}"


def _image_items(fs, url, files, options, storage):
    for f in files:
        uri = _uri(fs, url, f)
        yield _item(uri, image_id_from_name(f), "file", uri)


def _manifest_items(fs, url, files, options, storage):
    for f in files:
        base = posixpath.dirname(_uri(fs, url, f))
        for number, line in enumerate(fs.cat_file(f).decode("utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry, _, ident = line.partition("\t")
            if "://" not in entry and not entry.startswith("/"):
                entry = _join(base, entry)
            try:
                image_id = int(ident) if ident.strip() else image_id_from_name(entry)
            except ValueError:
                raise InputError(f"{f} line {number}: image id {ident!r} is not an integer") from None
            yield _item(entry, image_id, "file", entry)


def _tar_items(fs, url, files, options, storage):
    for f in files:
        uri = _uri(fs, url, f)
        with fs.open(f, "rb", block_size=1 << 16) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for member in tar:
                if member.isfile() and _suffix(member.name) in IMAGE_SUFFIXES:
                    yield _item(
                        f"{uri}#{member.name}",
                        image_id_from_name(member.name),
                        "range",
                        uri,
                        member.name,
                        member.offset_data,
                        member.size,
                    )


def _parquet_items(fs, url, files, options, storage):
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


def _coco_items(fs, url, files, options, storage):
    root = options.image_root.rstrip("/")
    root_fs, root_path = _fs(root, storage)
    for f in files:
        try:
            images = json.loads(fs.cat_file(f))["images"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{_uri(fs, url, f)}: not a COCO annotation file ({exc})") from None
        for image in images:
            name = image["file_name"]
            path = name if "://" in name else posixpath.join(root_path, name)
            uri = name if "://" in name else _uri(root_fs, root, path)
            yield _item(uri, int(image["id"]), "file", uri)


def fetch(
    items: pa.Table,
    storage: StorageOptions = StorageOptions(),
    *,
    threads: int = 8,
    attempts: int = 4,
    backoff_s: float = 0.5,
) -> tuple[list[bytes | None], list[str | None]]:
    """Bytes of each work item, or the error that prevented reading it.

    Returns ``(data, errors)``, aligned with ``items``: exactly one of ``data[i]``,
    ``errors[i]`` is None. Transient errors (connection, timeouts, 5xx) are retried
    ``attempts`` times with exponential backoff; missing files are not.
    """
    rows = items.to_pylist()
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):  # one read per Parquet row group, one per image otherwise
        key = (row["source"], row["offset"]) if row["kind"] == "parquet" else (i,)
        groups.setdefault(key, []).append(i)
    data: list[bytes | None] = [None] * len(rows)
    errors: list[str | None] = [None] * len(rows)

    def work(indices: list[int]) -> None:
        try:
            values = retry_io(lambda: _read(rows, indices, storage), attempts, backoff_s)
            for i, value in zip(indices, values):
                data[i] = value
        except Exception as exc:  # one bad image must not fail its block
            for i in indices:
                errors[i] = _describe(exc, rows[i]["source"])

    with ThreadPoolExecutor(max(1, min(threads, len(groups)))) as pool:
        list(pool.map(work, groups.values()))
    return data, errors


def _read(rows: list[dict], indices: list[int], storage: StorageOptions) -> list[bytes]:
    first = rows[indices[0]]
    fs, path = filesystem(first["source"], storage)
    if first["kind"] == "file":
        return [fs.cat_file(path)]
    if first["kind"] == "range":
        start, size = first["offset"], first["length"]
        blob = fs.cat_file(path, start=start, end=start + size)
        if len(blob) != size:
            raise ValueError(
                f"tar member {first['member']!r}: expected {size} bytes, read {len(blob)} (shard changed?)"
            )
        return [blob]
    column = first["member"]
    with fs.open(path, "rb") as handle:
        table = pq.ParquetFile(handle).read_row_group(first["offset"], columns=[column])
    values = table[column]
    if pa.types.is_struct(values.type):
        values = pc.struct_field(values, "bytes")
    out = []
    for i in indices:
        value = values[rows[i]["length"]].as_py()
        out.append(b"" if value is None else value)
    return out


def retry_io(
    call: Callable[[], T],
    attempts: int = 4,
    backoff_s: float = 0.5,
    permanent: tuple[type[BaseException], ...] = _PERMANENT,
) -> T:
    """``call()``, retried with exponential backoff (0.5, 1, 2, ... s) on transient storage
    errors (an object store restarting, connection resets, timeouts); ``permanent`` errors
    are raised at once."""
    for attempt in range(attempts):
        try:
            return call()
        except permanent:
            raise
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _describe(exc: Exception, source: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"read failed: {source} no longer exists (deleted after listing?)"
    if isinstance(exc, IsADirectoryError):
        return f"read failed: {source} is a directory"
    return failure_text("read", exc)
