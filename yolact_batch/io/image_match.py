"""Which ground-truth image a prediction row belongs to: by ``image_id`` or by file name."""

from __future__ import annotations

from dataclasses import dataclass, field

MATCH_MODES = ("auto", "id", "file-name")


def _path_parts(uri: str) -> list[str]:
    path = uri.split("://", 1)[-1].split("?", 1)[0].replace("\\", "/")
    return [p for p in path.split("/") if p]


@dataclass(frozen=True)
class ImageMatcher:
    """Maps ``(image_id, image_uri)`` of a prediction to a ground-truth image id.

    Attributes:
        images: ground-truth image dicts (``id``, ``file_name``).
        mode: ``"id"`` uses ``image_id`` only; ``"file-name"`` matches the end of
            ``image_uri`` against ground-truth ``file_name`` s (``a/b.jpg`` matches
            ``s3://x/a/b.jpg``; a bare base name matches when it is unique in the ground
            truth); ``"auto"`` takes the file name when it names a ground-truth image,
            else ``image_id``.
    """

    images: tuple[dict, ...]
    mode: str = "auto"
    _ids: frozenset = field(init=False, repr=False)
    _names: dict = field(init=False, repr=False)
    _basenames: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MATCH_MODES:
            raise ValueError(f"match mode must be one of {MATCH_MODES}, got {self.mode!r}")
        names: dict[str, int] = {}
        basenames: dict[str, list[int]] = {}
        for im in self.images:
            parts = _path_parts(str(im.get("file_name", "")))
            if parts:
                names["/".join(parts)] = int(im["id"])
                basenames.setdefault(parts[-1], []).append(int(im["id"]))
        object.__setattr__(self, "_ids", frozenset(int(im["id"]) for im in self.images))
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_basenames", {k: v[0] for k, v in basenames.items() if len(v) == 1})

    def by_file_name(self, image_uri: str | None) -> int | None:
        """Ground-truth id whose ``file_name`` ends ``image_uri`` (None when none or ambiguous)."""
        if not image_uri:
            return None
        parts = _path_parts(image_uri)
        found = {self._names["/".join(parts[i:])] for i in range(len(parts)) if "/".join(parts[i:]) in self._names}
        if len(found) == 1:
            return found.pop()
        return self._basenames.get(parts[-1]) if parts and not found else None

    def by_id(self, image_id: int | None) -> int | None:
        """``image_id`` when it is a ground-truth id, else None."""
        return int(image_id) if image_id is not None and int(image_id) in self._ids else None

    def match(self, image_id: int | None, image_uri: str | None = None) -> int | None:
        """Ground-truth image id of a prediction, or None when it names no ground-truth image."""
        if self.mode != "id":
            found = self.by_file_name(image_uri)
            if found is not None or self.mode == "file-name":
                return found
        return self.by_id(image_id)
