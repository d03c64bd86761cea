"""CLIP zero-shot images/second: the cached class matrix against re-encoding prompts per batch.

`ClipZeroShotClassifier` encodes the (class x template) prompts once and then runs only the image
tower per batch. The baseline is the naive loop that rebuilds the class matrix from text for every
batch. Both paths run in one process, interleaved, on the same random-weight model and the same
random input tensors (decoding is left out: `benchmarks/data_loading.py` measures it).

    python benchmarks/clip_throughput.py                      # tiny ViT, 101 classes, 4 templates
    python benchmarks/clip_throughput.py --model vit-b-32 --batches 2 --batch-size 32

Prints images/s of each path (median over rounds), the ratio cached/re-encode, and the one-off
cost of encoding the prompts. Weights are random (`allow_random`): only speed is measured.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from food_assets.ml.models.clip import (
    DEFAULT_TEMPLATES,
    ClipConfig,
    ClipZeroShotClassifier,
    build_class_embeddings,
    load_clip,
)

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "vit-b-32"), default="tiny")
    ap.add_argument("--classes", type=int, default=101, help="Food-101 has 101")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=5, help="batches per round and path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from open_clip import IMAGENET_CLASSNAMES  # realistic prompt lengths; ships in the wheel

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model == "tiny":
        cfg = ClipConfig(
            arch="bench-tiny-vit", model_cfg=TINY_CFG, weights="none", allow_random=True
        )
    else:
        cfg = ClipConfig(arch="ViT-B-32", weights="none", allow_random=True, quick_gelu=True)
    loaded = load_clip(cfg)
    loaded.model.to(device)
    names = [c.replace(" ", "_") for c in IMAGENET_CLASSNAMES[: args.classes]]
    size = loaded.preprocess.input_size
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randn(args.batch_size, 3, size, size, generator=g) for _ in range(args.batches)
    ]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    emb = build_class_embeddings(loaded, names, DEFAULT_TEMPLATES, device=device)
    sync()
    encode_once = time.perf_counter() - t0
    scale = float(loaded.model.logit_scale.detach().exp())
    model = ClipZeroShotClassifier(
        loaded.model.visual, emb.matrix, logit_scale=scale, class_names=names
    )
    model.eval().to(device)

    @torch.no_grad()
    def cached(x: torch.Tensor) -> None:
        model(x.to(device)).argmax(1).cpu()

    @torch.no_grad()
    def reencode(x: torch.Tensor) -> None:
        m = build_class_embeddings(loaded, names, DEFAULT_TEMPLATES, device=device).matrix
        feats = model.encode_image(x.to(device))
        (scale * feats @ m.to(device).T).argmax(1).cpu()

    cached(batches[0])  # warm-up (allocator, kernels)
    # The two paths alternate batch by batch, so load from other processes hits both alike;
    # the median over all batches of all rounds is reported.
    rates: dict[str, list[float]] = {"cached matrix": [], "re-encode per batch": []}
    for _ in range(args.rounds):
        for x in batches:
            for label, fn in (("cached matrix", cached), ("re-encode per batch", reencode)):
                sync()
                t = time.perf_counter()
                fn(x)
                sync()
                rates[label].append(len(x) / (time.perf_counter() - t))

    prompts = len(names) * len(DEFAULT_TEMPLATES)
    print(
        f"model={args.model} ({loaded.model_id}, random weights) classes={len(names)} "
        f"templates={len(DEFAULT_TEMPLATES)} prompts={prompts} batch={args.batch_size} "
        f"batches={args.batches} rounds={args.rounds} threads={args.threads} device={device}"
    )
    print(f"one-off prompt encoding: {encode_once:.3f} s")
    med = {label: statistics.median(r) for label, r in rates.items()}
    for label, r in rates.items():
        spread = f"min {min(r):.1f}, max {max(r):.1f}"
        print(f"{label:>22}: {med[label]:9.1f} images/s  (median of {len(r)} batches; {spread})")
    ratio = med["cached matrix"] / med["re-encode per batch"]
    print(f"{'ratio cached/re-encode':>22}: {ratio:9.1f}x")


if __name__ == "__main__":
    main()
