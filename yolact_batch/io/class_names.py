"""``--class-names``: a model's class names and dataset category ids, from a file or a list.

Three forms:

* a COCO JSON (``instances.json`` or any file with ``categories``): its categories sorted by id,
  keeping the ids (network class ``i + 1`` is the ``i``-th smallest id, as the reference's
  ``COCO_LABEL_MAP`` orders COCO's 80 classes); non-contiguous ids stay as they are;
* a text file, one name per line (blank lines skipped): ids ``1..N``;
* a comma-separated list, ``cat,dog,bird``: ids ``1..N``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClassNames:
    """Foreground classes in network order.

    Attributes:
        names: class name of network class ``i + 1``.
        category_ids: dataset category id of each class, in the same order.
        origin: where they came from, for messages.
    """

    names: tuple[str, ...]
    category_ids: tuple[int, ...]
    origin: str

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError(f"{self.origin}: no class names")
        if len(self.category_ids) != len(self.names):
            raise ValueError(f"{self.origin}: {len(self.names)} names but {len(self.category_ids)} category ids")
        for what, values in (("class name", self.names), ("category id", self.category_ids)):
            seen = set()
            for v in values:
                if v in seen:
                    raise ValueError(f"{self.origin}: {what} {v!r} appears twice; each class needs its own")
                seen.add(v)


def read_class_names(spec: str) -> ClassNames:
    """Class names from ``spec``: a COCO JSON path, a text-file path, or ``a,b,c`` (see the module docstring).

    Raises:
        ValueError: the file cannot be read or holds no usable names (the message names the file).
    """
    path = Path(spec)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read class names file {path}: {exc}") from exc
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            return _from_coco(text, str(path))
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not names:
            raise ValueError(f"class names file {path} is empty; write one class name per line")
        return ClassNames(names, tuple(range(1, len(names) + 1)), str(path))
    if "," not in spec and (path.suffix.lower() in (".json", ".txt", ".names") or "/" in spec or path.exists()):
        raise ValueError(f"cannot read class names file {spec}: no such file (or a comma-separated list a,b,c)")
    names = tuple(n.strip() for n in spec.split(","))
    if not all(names):
        raise ValueError(f"--class-names {spec!r}: empty name in the comma-separated list")
    return ClassNames(names, tuple(range(1, len(names) + 1)), "--class-names")


def _from_coco(text: str, origin: str) -> ClassNames:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"class names file {origin} is not valid JSON: {exc}") from exc
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not categories:
        raise ValueError(
            f"class names file {origin}: no COCO 'categories' list (expected [{{'id': 1, 'name': ...}}, ...])"
        )
    try:
        pairs = sorted((int(c["id"]), str(c["name"]).strip()) for c in categories)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"class names file {origin}: every category needs an integer 'id' and a 'name' ({exc!r})"
        ) from exc
    return ClassNames(tuple(n for _, n in pairs), tuple(i for i, _ in pairs), origin)
