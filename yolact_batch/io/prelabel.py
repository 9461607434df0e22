"""Pre-labeling controls shared by every labeling-tool export, and the count of what they drop.

Every export (COCO dataset, CVAT, Label Studio, YOLO) first reads the output's class columns
(``scan_classes``, no masks) to fix its label list, then streams the rows once: each ok row's
instances go through the same selection (class subset, per-class score threshold, minimum
mask area, top N per image), in that order, and come out with the label name of the target
project. Every instance left out is counted under the first rule that dropped it, and every
error row is counted, so an export can say exactly what it did not write.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from yolact_batch.io.results_io import iter_batches, part_files
from yolact_batch.io.storage import StorageOptions, filesystem

__all__ = ["ExportReport", "PrelabelSettings", "Prelabeler", "parse_pairs", "scan_classes"]

# Reasons an instance is not exported, in the order the rules run.
DROP_REASONS = ("other_class", "below_score", "below_area", "over_top_n")
IMAGE_MODES = ("copy", "symlink", "none")


@dataclass(frozen=True)
class PrelabelSettings:
    """Which predictions become pre-labels, and under which names.

    Attributes:
        score_threshold: keep instances scoring strictly above this (every class).
        class_thresholds: ``(class, threshold)`` pairs overriding ``score_threshold`` for
            those classes (our class names).
        min_area: keep masks of at least this many pixels (1: drop only empty masks, which
            have nothing to label).
        top_n: keep at most this many instances per image, the best-scoring first
            (applied after the other rules; ``None``: no limit).
        classes: export only these classes (our names; ``None``: all).
        rename: ``(our name, label name)`` pairs: the label the target project uses for our
            class. Several classes may share one label.
    """

    score_threshold: float = 0.0
    class_thresholds: tuple[tuple[str, float], ...] = ()
    min_area: int = 1
    top_n: int | None = None
    classes: tuple[str, ...] | None = None
    rename: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.min_area < 1:
            raise ValueError(f"min_area must be >= 1 pixel (empty masks have nothing to label), got {self.min_area}")
        if self.top_n is not None and self.top_n < 1:
            raise ValueError(f"top_n must be >= 1 or None, got {self.top_n}")
        for name, pairs in (("class_thresholds", self.class_thresholds), ("rename", self.rename)):
            keys = [k for k, _ in pairs]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{name}: a class is given twice in {list(pairs)}")

    def label(self, category: str) -> str:
        """The target project's label for our class ``category``."""
        return dict(self.rename).get(category, category)

    def named_classes(self) -> set[str]:
        """Every class name the settings mention (to report the ones no instance had)."""
        return {*(self.classes or ()), *(k for k, _ in self.class_thresholds), *(k for k, _ in self.rename)}


def parse_pairs(items: Sequence[str], what: str, value_type=str) -> tuple[tuple[str, object], ...]:
    """``["a=1", "b=2"]`` -> ``(("a", 1), ("b", 2))``; errors name ``what`` and the bad item."""
    out = []
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key:
            raise ValueError(f"{what}: expected NAME=VALUE, got {item!r}")
        try:
            out.append((key, value_type(value)))
        except ValueError:
            raise ValueError(f"{what}: {value!r} in {item!r} is not a {value_type.__name__}") from None
    return tuple(out)


@dataclass(frozen=True)
class ExportReport:
    """What a labeling-tool export wrote and what it left out.

    Attributes:
        images: images exported (ok rows).
        error_rows: rows skipped because their image could not be processed.
        instances: instances in the ok rows.
        exported: instances written.
        dropped: ``reason -> count`` for every instance not written: the shared rules
            (``other_class``, ``below_score``, ``below_area``, ``over_top_n``) and the export's
            own (e.g. ``no_polygon``: nothing left after polygon simplification).
        files: files written (folders, for exports of one file per image).
        unused_names: class names in the settings that no instance had (typos?).
        notes: one-line warnings for the user (e.g. image references a tool cannot open).
    """

    images: int
    error_rows: int
    instances: int
    exported: int
    dropped: dict[str, int]
    files: tuple[str, ...]
    unused_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def line(self, command: str) -> str:
        """One summary line naming every count, for the CLI."""
        drops = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.dropped.items() if n) or "none"
        text = (
            f"{command}: {self.images} images, {self.exported} of {self.instances} instances "
            f"(dropped: {drops}), {self.error_rows} error rows skipped, {len(self.files)} files"
        )
        if self.unused_names:
            text += f"; no instance of {', '.join(self.unused_names)}"
        return "\n".join([text, *(f"{command}: {note}" for note in self.notes)])


def scan_classes(output_uri: str, *, storage: StorageOptions, allow_incomplete: bool) -> dict[str, int]:
    """Class name -> smallest category id, over every instance of an output.

    Reads only the two leaf columns ``instances.category`` / ``category_id`` (no masks), so
    every export knows its label list before it writes the first task or line.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, paths = part_files(output_uri, storage=storage, allow_incomplete=allow_incomplete)
    classes: dict[str, int] = {}
    leaves = ["instances.list.element.category", "instances.list.element.category_id"]
    for path in paths:
        with fs.open(path, "rb") as f:
            try:
                batches = list(pq.ParquetFile(f).iter_batches(columns=leaves))
            except (pa.ArrowException, OSError) as exc:
                raise ValueError(f"{path}: not a Parquet file of the row format ({exc})") from None
        for batch in batches:  # two small columns: a part file's worth fits in memory
            for row in batch.column("instances").to_pylist():
                for inst in row or ():
                    name, cid = inst["category"], inst["category_id"]
                    classes[name] = min(classes.get(name, cid), cid)
    return classes


@dataclass
class Prelabeler:
    """Applies :class:`PrelabelSettings` row by row and keeps the counts.

    Attributes:
        settings: the selection and renaming.
        classes: class name -> category id of every class in the output (``scan_classes``).
        counts: what :meth:`rows` / :meth:`select` saw and dropped.

    ``rows(...)`` yields ``(row, kept)`` for each ok row, ``kept`` being its selected
    instances (dicts of the row format plus ``"label"``, in the row's order).
    """

    settings: PrelabelSettings = PrelabelSettings()
    classes: dict[str, int] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def select(self, instances: list[dict]) -> list[dict]:
        """The instances the settings keep, each with its ``"label"``; counts the rest."""
        s = self.settings
        thresholds = dict(s.class_thresholds)
        kept = []
        for inst in instances:
            name = inst["category"]
            if s.classes is not None and name not in s.classes:
                self.counts["other_class"] += 1
            elif not inst["score"] > thresholds.get(name, s.score_threshold):
                self.counts["below_score"] += 1
            elif inst["area"] < s.min_area:
                self.counts["below_area"] += 1
            else:
                kept.append({**inst, "label": s.label(name)})
        if s.top_n is not None and len(kept) > s.top_n:
            best = sorted(range(len(kept)), key=lambda k: -kept[k]["score"])[: s.top_n]
            self.counts["over_top_n"] += len(kept) - s.top_n
            kept = [kept[k] for k in sorted(best)]
        self.counts["instances"] += len(instances)
        return kept

    def rows(
        self, output_uri: str, columns: Sequence[str], *, storage: StorageOptions, allow_incomplete: bool
    ) -> Iterator[tuple[dict, list[dict]]]:
        """``(row, kept instances)`` of every ok row of an output, one record batch in memory."""
        wanted = list(dict.fromkeys([*columns, "status", "instances"]))
        for batch in iter_batches(output_uri, columns=wanted, storage=storage, allow_incomplete=allow_incomplete):
            for row in batch.to_pylist():
                if row["status"] != "ok":
                    self.counts["error_rows"] += 1
                    continue
                self.counts["images"] += 1
                yield row, self.select(row["instances"])

    def label_ids(self) -> dict[str, int]:
        """Label -> smallest category id of the classes it names (class subset applied), in
        (id, name) order: the target project's labels in the model's class order."""
        s = self.settings
        ids: dict[str, int] = {}
        for cid, name in sorted((cid, name) for name, cid in self.classes.items()):
            if s.classes is None or name in s.classes:
                ids.setdefault(s.label(name), cid)
        return ids

    def labels(self, extra: Sequence[str] = ()) -> list[str]:
        """Label names of the target project: :meth:`label_ids`' labels, then ``extra`` ones."""
        return list(dict.fromkeys([*self.label_ids(), *extra]))

    def report(self, exported: int, files: Sequence[str], own: dict[str, int] | None = None, notes=()) -> ExportReport:
        c = self.counts
        return ExportReport(
            images=c["images"], error_rows=c["error_rows"], instances=c["instances"], exported=exported,
            dropped={**{r: c[r] for r in DROP_REASONS}, **(own or {})}, files=tuple(files),
            unused_names=tuple(sorted(self.settings.named_classes() - set(self.classes))), notes=tuple(notes),
        )  # fmt: skip


def place_image(uri: str, target: str, mode: str, storage: StorageOptions) -> None:
    """Put the image ``uri`` at the local path ``target``: ``mode`` is one of ``IMAGE_MODES``."""
    if mode == "none":
        return
    fs, path = filesystem(uri, storage)
    if mode == "symlink":
        from fsspec.implementations.local import LocalFileSystem

        if not isinstance(fs, LocalFileSystem):
            raise ValueError(f"{uri}: symlinked images must be local files; copy them instead")
        if os.path.lexists(target):
            os.remove(target)
        os.symlink(os.path.abspath(path), target)
        return
    try:
        src = fs.open(path, "rb")
    except FileNotFoundError:
        inside = (
            " (an image inside a tar shard or Parquet file: use images 'none' and extract it)" if "#" in uri else ""
        )
        raise FileNotFoundError(f"{uri}: image not found, cannot {mode} it{inside}") from None
    with src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
