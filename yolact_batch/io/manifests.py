"""Manifests: one image URI per line (``URI<TAB>image_id`` allowed), for inputs too big to list.

One file is one image: entries are normalised (``//``, ``/./``, ``..``, ``file://``, relative
to the manifest's folder), so two spellings of a file give one URI. A byte-order mark is
ignored; a line starting with ``#`` is a comment unless it names an existing file
(``#1.jpg``); a line that is not UTF-8 is counted as not read, never fatal.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from yolact_batch.io.inventory import InputError, Skipped
from yolact_batch.io.storage import StorageOptions, filesystem


def _normal_local(path: str) -> str:
    """``/a//b/./c.jpg`` -> ``/a/b/c.jpg`` (POSIX keeps a leading ``//``; one file needs one name)."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _entry_uri(entry: str, base: str, local_style: str) -> str:
    """A manifest entry as the one URI of its file: relative entries joined to the manifest's
    folder; local paths normalised and spelled like the input (plain, or ``file://``)."""
    if entry.startswith("file://"):
        entry = entry[len("file://") :]
        entry = entry[len("localhost") :] if entry.startswith("localhost/") else entry
    elif "://" in entry:
        return entry
    if not entry.startswith("/"):
        protocol, sep, folder = base.rpartition("://")
        if protocol and protocol != "file":
            return f"{protocol}{sep}{posixpath.normpath(posixpath.join(folder, entry))}"
        entry = posixpath.join(folder, entry)
    return local_style + _normal_local(entry)


def manifest_entries(
    raw: bytes, name: str, base: str, local_style: str, storage: StorageOptions, skipped: Skipped
) -> Iterator[tuple[str, int | None]]:
    """``(uri, image_id or None)`` of each entry of the manifest ``name`` (its bytes ``raw``).

    ``base``: the manifest's folder (relative entries are joined to it); ``local_style``:
    ``"file://"`` or ``""``, how local entries are spelled (like the input). A line that is
    not UTF-8 is counted in ``skipped``.

    Raises:
        InputError: an id that is not an integer, or one id on two lines.
    """
    ids: dict[int, int] = {}
    for number, data in enumerate(raw.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        try:
            line = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            skipped.add("manifest line not UTF-8", f"{posixpath.basename(name)} line {number}")
            continue
        if not line:
            continue
        entry, _, ident = line.partition("\t")
        entry = entry.strip()
        uri = _entry_uri(entry, base, local_style)
        if line.startswith("#") and not _exists(uri, storage):  # a comment, unless it names a file
            continue
        try:
            image_id = int(ident) if ident.strip() else None
        except ValueError:
            raise InputError(f"{name} line {number}: image id {ident!r} is not an integer") from None
        if image_id is not None:
            if image_id in ids:
                raise InputError(
                    f"{name} line {number}: image id {image_id} is also on line {ids[image_id]}; ids must be unique"
                )
            ids[image_id] = number
        yield uri, image_id


def _exists(uri: str, storage: StorageOptions) -> bool:
    fs, path = filesystem(uri, storage)
    return fs.isfile(path)
