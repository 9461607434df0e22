"""Every file under an input, accounted for: the files to read, and what was skipped and why.

A directory (local) or prefix (object store) is walked once. Each entry either becomes a
candidate file or is counted under one ``Skipped`` reason with a few example names, so
that nothing is ignored without a word (the summary, the log and ``_SUCCESS`` carry it):

=====================  ==================================================================
reason                 what
=====================  ==================================================================
hidden                 names starting with ``.``: dotfiles, ``.git/``, AppleDouble ``._x.jpg``
special file           FIFOs, sockets, devices: reading one could block forever
dangling link          a symbolic link whose target does not exist
link loop              a link to a folder already being walked
same file              a second path (hard link, symlink) to a file already listed
name not UTF-8         a file name whose bytes are not UTF-8: an ``image_uri`` cannot name it
inside the output      the job's own output folder, when it lies under the input
=====================  ==================================================================

Local walks use ``os.scandir`` on byte paths (names of any bytes, symlinked folders
followed once); object stores are listed with one ``find``. Nothing here imports Ray.
"""

from __future__ import annotations

import glob
import os
import posixpath
import stat
from dataclasses import dataclass, field

import fsspec

from yolact_batch.io.storage import is_local

EXAMPLES = 3  # example names kept per reason


class InputError(ValueError):
    """The input cannot be listed (missing, unreadable, empty, ambiguous); names the fix."""


@dataclass
class Skipped:
    """Entries of the input that are not read, by reason: a count and a few example names.

    ``examples[reason]`` holds the first ``EXAMPLES`` names (relative to the input) in
    listing order; ``counts[reason]`` how many there were in all.
    """

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, name: str, count: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count
        names = self.examples.setdefault(reason, [])
        if len(names) < EXAMPLES:
            names.append(name)

    def merge(self, other: "Skipped") -> None:
        for reason, count in other.counts.items():
            for i, name in enumerate(other.examples.get(reason, [])):
                self.add(reason, name, count if i == 0 else 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, dict]:
        """``{reason: {"count": n, "examples": [...]}}``, as written to ``_SUCCESS``."""
        return {r: {"count": n, "examples": list(self.examples.get(r, []))} for r, n in sorted(self.counts.items())}

    def line(self) -> str:
        """``3 hidden (.DS_Store, ._a.jpg, .git/), 1 special file (fifo.jpg)``; "" when none."""
        return ", ".join(f"{n} {r} ({', '.join(self.examples.get(r, []))})" for r, n in sorted(self.counts.items()))


def _printable(name: bytes) -> str:
    """A name for messages: undecodable bytes shown as ``\\xff``."""
    return name.decode("utf-8", "backslashreplace")


def walk_local(root: str, exclude: tuple[str, ...] = ()) -> tuple[list[str], Skipped]:
    """Regular files under the local folder ``root`` (absolute paths, sorted) and what was skipped.

    Real folders and files are walked first; symbolic links after, so that a link to
    something already listed is the one counted as skipped. Linked folders outside the
    tree are walked, each real folder once. ``exclude`` folders are not entered.
    """
    skipped, files, seen_files, seen_dirs = Skipped(), [], set(), set()
    excluded = {os.fsencode(posixpath.normpath(e)) for e in exclude}
    base = os.fsencode(posixpath.normpath(root))
    links: list[bytes] = []

    def relative(path: bytes, folder: bool = False) -> str:
        return _printable(os.path.relpath(path, base)) + ("/" if folder else "")

    def place(path: bytes, info: os.stat_result, pending: list[bytes]) -> None:
        key = (info.st_dev, info.st_ino)
        if stat.S_ISDIR(info.st_mode):
            if path in excluded:
                skipped.add("inside the output", relative(path, True))
            elif key in seen_dirs:
                skipped.add("link to a listed folder", relative(path, True))
            else:
                seen_dirs.add(key)
                pending.append(path)
        elif not stat.S_ISREG(info.st_mode):
            skipped.add("special file", relative(path))
        elif key in seen_files:
            skipped.add("same file", relative(path))
        else:
            seen_files.add(key)
            files.append(path.decode("utf-8"))

    def walk(pending: list[bytes]) -> None:
        while pending:
            folder = pending.pop()
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda e: e.name)
            for entry in children:
                path = entry.path
                if entry.name.startswith(b"."):
                    skipped.add("hidden", relative(path, entry.is_dir(follow_symlinks=False)))
                    continue
                try:
                    path.decode("utf-8")
                except UnicodeDecodeError:
                    skipped.add("name not UTF-8", relative(path))
                    continue
                if entry.is_symlink():
                    links.append(path)
                    continue
                try:
                    place(path, entry.stat(follow_symlinks=False), pending)
                except FileNotFoundError:
                    skipped.add("vanished while listing", relative(path))

    info = os.stat(base)
    seen_dirs.add((info.st_dev, info.st_ino))
    walk([base])
    while links:
        path, pending = links.pop(0), []
        try:
            place(path, os.stat(path), pending)
        except FileNotFoundError:
            skipped.add("dangling link", relative(path))
        except OSError:  # a link to itself (ELOOP), permission denied
            skipped.add("unreadable link", relative(path))
        walk(pending)
    return sorted(files), skipped


def walk(fs: fsspec.AbstractFileSystem, path: str, exclude: tuple[str, ...], skipped: Skipped) -> list[str]:
    """Files under the folder ``path`` (local or object store), every other entry counted in
    ``skipped``; ``exclude``: folder URLs not entered (the job's output)."""
    if is_local(fs):
        local = tuple(os.path.abspath(e.removeprefix("file://")) for e in exclude if _local_url(e))
        files, found = walk_local(path, local)
        skipped.merge(found)
        return files
    base = path.rstrip("/")
    outputs = tuple(_strip(fs, e).rstrip("/") + "/" for e in exclude if not _local_url(e))
    files, folders = [], set()  # a hidden or output folder counts once, as on a local disk

    def skip(reason: str, name: str) -> None:
        if name.endswith("/"):
            if name in folders:
                return
            folders.add(name)
        skipped.add(reason, name)

    for key in sorted(fs.find(base, withdirs=False)):
        parts = key[len(base) + 1 :].split("/")
        hidden = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        output = next((p for p in outputs if key.startswith(p)), None)
        if hidden is not None:
            skip("hidden", "/".join(parts[: hidden + 1]) + ("/" if hidden < len(parts) - 1 else ""))
        elif output is not None:
            skip("inside the output", output[len(base) + 1 :])
        elif not key.endswith("/"):  # "folder/" keys are folder markers
            files.append(key)
    return files


def glob_files(fs: fsspec.AbstractFileSystem, pattern: str, skipped: Skipped) -> list[str]:
    """Files matching ``pattern``; local names are matched as bytes (any name can be there)."""
    if not is_local(fs):
        return sorted(p for p in fs.glob(pattern) if fs.isfile(p))
    files = []
    for match in sorted(glob.glob(os.fsencode(pattern))):
        try:
            name = match.decode("utf-8")
        except UnicodeDecodeError:
            skipped.add("name not UTF-8", match.decode("utf-8", "backslashreplace"))
            continue
        if os.path.isdir(name):
            continue
        if is_regular(name):
            files.append(name)
        else:
            skipped.add("special file" if os.path.exists(name) else "dangling link", posixpath.basename(name))
    return files


def _local_url(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _strip(fs, url: str) -> str:
    return fs._strip_protocol(url)


def is_regular(path: str) -> bool:
    """True for a regular file (following links); False for FIFOs, devices, folders, nothing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
