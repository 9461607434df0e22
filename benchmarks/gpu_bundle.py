"""Copy the few shared files ``gpu_check.sh`` needs into ``./shared``, so a device call carries them.

    python benchmarks/gpu_bundle.py [--source ../shared] [--dest shared] [--images 40]

A device call sends the checkout and a ``shared/`` folder inside it, nothing beside it, and at
most 64 MiB. The whole ``../shared`` is far larger (golden ``.npz`` files are 12 MB each), so this
copies: the golden checkpoint recipes, manifests and README, every golden ``<id>.json``, one
golden ``.npz`` per config (raw-head parity; the others are left out), and the golden images plus
the first ``--images`` COCO images in name order (the benchmark's JPEG pool). ``shared/`` is
git-ignored. Prints what it copied and the total size.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 48 * 2**20  # leaves room for the checkout itself under the 64 MiB a call carries
NPZ_PER_CONFIG = {"yolact_resnet50": "184324.npz", "yolact_base": "184324.npz"}


def plan(source: Path, images: int) -> list[Path]:
    """Files under ``source`` to copy, relative to it."""
    golden = source / "golden"
    if not golden.is_dir():
        raise SystemExit(
            f"error: {golden} not found: pass --source, the folder holding golden/ and coco_val2017_subset/"
        )
    files = [p for p in golden.iterdir() if p.is_file()]  # recipes, manifests, README, layouts
    for folder in (p for p in golden.iterdir() if p.is_dir()):
        files += sorted(folder.glob("*.json"))
        npz = folder / NPZ_PER_CONFIG.get(folder.name, "")
        if npz.is_file():
            files.append(npz)
    coco = sorted((source / "coco_val2017_subset" / "val2017").glob("*.jpg"))
    golden_ids = {p.stem for folder in golden.iterdir() if folder.is_dir() for p in folder.glob("*.json")}
    files += [p for p in coco if p.stem.lstrip("0") in golden_ids] + coco[:images]
    return sorted({p.relative_to(source) for p in files})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--dest", type=Path, default=REPO / "shared")
    parser.add_argument("--images", type=int, default=40, help="COCO images for the benchmark pool (40)")
    args = parser.parse_args()
    files = plan(args.source.resolve(), args.images)
    total = sum((args.source / f).stat().st_size for f in files)
    if total > LIMIT_BYTES:
        raise SystemExit(
            f"error: the bundle would be {total / 2**20:.1f} MiB (> {LIMIT_BYTES / 2**20:.0f}); use fewer --images"
        )
    for rel in files:
        target = args.dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.source / rel, target)
    print(f"gpu_bundle: {len(files)} files, {total / 2**20:.1f} MiB -> {args.dest}")


if __name__ == "__main__":
    main()
