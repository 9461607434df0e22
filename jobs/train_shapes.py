"""Train, export and evaluate the project's small YOLACT on the synthetic shapes dataset.

    .venv/bin/python jobs/train_shapes.py            # the shipped model: see yolact_batch/models/MODEL_CARD.md

Steps: generate the train / held-out splits if missing (``yolact_batch.core.synthetic``), train from
scratch with YOLACT's losses (``yolact_batch.training``), save the state dict, export it with our
exporter (graph contract) and measure COCO box / mask AP on the held-out split twice: through
the torch network with host post-processing and through the ONNX model with ``YolactModel``.
Prints progress, then one JSON summary line. Needs the ``export`` extra (torch, onnx).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from yolact_batch.backends.factory import BackendOptions
from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.heads import RawHeads
from yolact_batch.core.postprocess import Postprocessor
from yolact_batch.core.preprocess import preprocess
from yolact_batch.core.priors import make_priors
from yolact_batch.core.synthetic import SHAPES_SEED, make_dataset
from yolact_batch.model import YolactModel
from yolact_batch.torchnet import export_onnx, load_checkpoint
from yolact_batch.torchnet.network import Yolact
from yolact_batch.training.data import CocoInstances, batch_order
from yolact_batch.training.evaluate import coco_metrics, predict_split
from yolact_batch.training.losses import LossWeights, yolact_loss
from yolact_batch.training.shapes import SHAPES_CONFIG

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path.home() / ".cache/yolact_batch/shapes",
        help="where the synthetic splits are (generated when missing)",
    )
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--data-seed", type=int, default=SHAPES_SEED, help="seed of the synthetic dataset")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and flips")
    parser.add_argument("--iterations", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--warmup", type=int, default=200, help="linear warm-up iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--checkpoint", type=Path, default=None, help="state dict path (default: in --data-dir)")
    parser.add_argument("--output", type=Path, default=REPO / "yolact_batch/models/yolact_shapes.onnx")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-only", action="store_true", help="skip training: export and evaluate --checkpoint")
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or args.data_dir / f"yolact_shapes_seed{args.seed}.pth"
    return args


def ensure_split(data_dir: Path, split: str, num_images: int, seed: int) -> Path:
    """The split's ``instances.json``, generated unless it already holds ``num_images`` images."""
    json_path = data_dir / split / "instances.json"
    if json_path.is_file():
        data = json.loads(json_path.read_text())
        if len(data["images"]) == num_images and data["info"].get("seed") == seed:
            return json_path
    start = time.monotonic()
    json_path = make_dataset(data_dir, split=split, num_images=num_images, seed=seed)
    print(f"generated {num_images} {split} images in {time.monotonic() - start:.0f} s -> {json_path}", flush=True)
    return json_path


def learning_rate(iteration: int, *, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 1% of it."""
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(total - warmup, 1)
    return peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * progress)))


def train(args: argparse.Namespace, train_json: Path, config: ModelConfig) -> float:
    """Train from scratch and save the state dict to ``args.checkpoint``; returns the seconds taken."""
    torch.manual_seed(args.seed)
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    dataset = CocoInstances(train_json, config)
    # Channels-last convolutions are about a quarter faster on CPU; the state dict is the same.
    network = Yolact(config).train().to(memory_format=torch.channels_last)
    priors = torch.from_numpy(make_priors(config.priors))
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    weights = LossWeights()
    flips = np.random.default_rng([args.seed, 1])
    start = time.monotonic()
    running: dict[str, float] = {}
    iteration, epoch = 0, 0
    while iteration < args.iterations:
        for indices in batch_order(len(dataset), batch_size=args.batch_size, seed=args.seed, epoch=epoch):
            if iteration >= args.iterations:
                break
            samples = [
                dataset.sample(int(i), flip_x=flips.random() < 0.5, flip_y=flips.random() < 0.5) for i in indices
            ]
            images = torch.from_numpy(np.stack([s[0] for s in samples])).contiguous(memory_format=torch.channels_last)
            lr = learning_rate(iteration, peak=args.lr, warmup=args.warmup, total=args.iterations)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pyramid, loc, conf_logits, coeffs, proto = network.heads(images)
            segment = network.semantic_seg_conv(pyramid[0])
            losses = yolact_loss(loc, conf_logits, coeffs, proto, segment, [s[1] for s in samples], priors, weights)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            # The first iterations of random heads give large gradients; clipping keeps them sane.
            torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
            optimizer.step()
            for key, value in losses.items():
                running[key] = running.get(key, 0.0) + value.item() / args.log_every
            iteration += 1
            if iteration % args.log_every == 0 or iteration == args.iterations:
                elapsed = time.monotonic() - start
                shown = " ".join(f"{k} {v:.3f}" for k, v in running.items())
                print(
                    f"iter {iteration}/{args.iterations} epoch {epoch} lr {lr:.2e} {shown} "
                    f"[{elapsed / 60:.1f} min, {elapsed / iteration:.2f} s/iter]",
                    flush=True,
                )
                running = {}
            if iteration % 500 == 0:  # progress can be evaluated, and a crash costs at most 500 iterations
                torch.save(network.state_dict(), args.checkpoint)
        epoch += 1
    torch.save(network.eval().state_dict(), args.checkpoint)
    return time.monotonic() - start


def torch_predictor(network: Yolact, config: ModelConfig):
    """images -> Detections through the torch network and the host post-processing (raw contract)."""
    postprocessor = Postprocessor(config, "raw")

    def predict(images):
        batch = torch.from_numpy(np.stack([preprocess(im, config) for im in images]))
        with torch.no_grad():
            heads = RawHeads(*(t.numpy() for t in network(batch)))
        return postprocessor(heads, [im.shape[:2] for im in images])

    return predict


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    config = SHAPES_CONFIG
    train_json = ensure_split(args.data_dir, "train", args.train_images, args.data_seed)
    val_json = ensure_split(args.data_dir, "val", args.val_images, args.data_seed)
    train_seconds = None if args.eval_only else train(args, train_json, config)
    network = load_checkpoint(args.checkpoint, config)
    torch_metrics = coco_metrics(val_json, predict_split(val_json, torch_predictor(network, config)))
    export_onnx(args.checkpoint, config, args.output, contract="graph")
    model = YolactModel(str(args.output), backend=BackendOptions(intra_op_threads=args.threads))
    onnx_metrics = coco_metrics(val_json, predict_split(val_json, model))
    summary = {
        "seed": args.seed,
        "data_seed": args.data_seed,
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": args.threads,
        "train_images": args.train_images,
        "val_images": args.val_images,
        "train_seconds": None if train_seconds is None else round(train_seconds),
        "total_seconds": round(time.monotonic() - started),
        "checkpoint": str(args.checkpoint),
        "onnx": str(args.output),
        "onnx_bytes": args.output.stat().st_size,
        "onnx_metrics": {k: round(v, 4) for k, v in onnx_metrics.items()},
        "torch_metrics": {k: round(v, 4) for k, v in torch_metrics.items()},
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
