"""CLIP zero-shot images/second: food_assets' classifier against open_clip's own recipe.

Three paths classify the same random input tensors with the same model (same weights), in one
process, taking turns round by round so that load from other processes hits all alike:

- `food_assets ClipZeroShotClassifier`: the project's module, image tower plus the class matrix
  that `build_class_embeddings` encoded once.
- `open_clip recipe` (the baseline): what a user of open_clip writes, once
  `classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates)`, then per
  batch `model.logit_scale.exp() * model.encode_image(x, normalize=True) @ classifier`.
- `image tower alone` (the limit): `model.visual(x)`, no normalisation, no class matrix.

Decoding is left out (`benchmarks/data_loading.py` measures it). Weights are random
(`pretrained=None` / `weights="none"`: no CLIP weights can be downloaded here): throughput does
not depend on the weights' values, and predictions are meaningless. The two classifiers' logits
are compared by value as a sanity check.

    .venv/bin/python benchmarks/clip_throughput.py                  # tiny ViT, 101 x 4 prompts
    .venv/bin/python benchmarks/clip_throughput.py --model vit-b-32 --batches 2 --rounds 2

Prints images/s of each path (median over rounds), the ratios food_assets / open_clip
(target >= 0.95) and food_assets / image tower, and the one-off cost of encoding the prompts.
"""

from __future__ import annotations

import argparse
import os
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
PROJECT, OPEN_CLIP, TOWER = (
    "food_assets ClipZeroShotClassifier",
    "open_clip recipe (baseline)",
    "image tower alone (limit)",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "vit-b-32"), default="tiny")
    ap.add_argument("--classes", type=int, default=101, help="Food-101 has 101")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=5, help="batches per round and path")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was

    from open_clip import IMAGENET_CLASSNAMES, build_zero_shot_classifier  # ship in the wheel

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model == "tiny":
        cfg = ClipConfig(
            arch="bench-tiny-vit", model_cfg=TINY_CFG, weights="none", allow_random=True
        )
    else:
        cfg = ClipConfig(arch="ViT-B-32", weights="none", allow_random=True, quick_gelu=True)
    loaded = load_clip(cfg)
    clip = loaded.model.to(device).eval()
    names = list(IMAGENET_CLASSNAMES[: args.classes])  # realistic prompt lengths
    size = loaded.preprocess.input_size
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randn(args.batch_size, 3, size, size, generator=g) for _ in range(args.batches)
    ]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # One-off text side, each path its own way.
    t0 = time.perf_counter()
    emb = build_class_embeddings(loaded, names, DEFAULT_TEMPLATES, device=device)
    sync()
    encode_project = time.perf_counter() - t0
    model = ClipZeroShotClassifier(
        clip.visual,
        emb.matrix,
        logit_scale=float(clip.logit_scale.detach().exp()),
        class_names=names,
    ).eval()
    model.to(device)
    templates = [lambda c, t=t: t.format(c=c) for t in DEFAULT_TEMPLATES]
    t0 = time.perf_counter()
    classifier = build_zero_shot_classifier(
        clip, loaded.tokenizer, names, templates, device=device
    )  # (embed_dim, classes)
    sync()
    encode_open_clip = time.perf_counter() - t0

    @torch.no_grad()
    def project(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).argmax(1).cpu()

    @torch.no_grad()
    def open_clip_recipe(x: torch.Tensor) -> torch.Tensor:
        feats = clip.encode_image(x.to(device), normalize=True)
        return (clip.logit_scale.exp() * feats @ classifier).argmax(1).cpu()

    @torch.no_grad()
    def tower(x: torch.Tensor) -> torch.Tensor:
        return clip.visual(x.to(device)).cpu()

    with torch.no_grad():
        x = batches[0].to(device)
        a = model(x)
        b = clip.logit_scale.exp() * clip.encode_image(x, normalize=True) @ classifier
        logit_diff = float((a - b).abs().max())
        same_top1 = float((a.argmax(1) == b.argmax(1)).float().mean())
    paths = {PROJECT: project, OPEN_CLIP: open_clip_recipe, TOWER: tower}
    for fn in paths.values():
        fn(batches[0])  # warm-up (allocator, kernels)
    # One sample = one path through all batches of a round (a tiny ViT batch takes about a
    # millisecond, less than a scheduler slice on a loaded machine); the paths take turns
    # within each round, first place rotating, and ratios are paired round by round.
    rates: dict[str, list[float]] = {label: [] for label in paths}
    order = list(paths)
    n_images = sum(len(x) for x in batches)
    for r in range(args.rounds):
        for label in order[r % 3 :] + order[: r % 3]:
            fn = paths[label]
            sync()
            t = time.perf_counter()
            for x in batches:
                fn(x)
            sync()
            rates[label].append(n_images / (time.perf_counter() - t))

    prompts = len(names) * len(DEFAULT_TEMPLATES)
    print(
        f"model={args.model} ({loaded.model_id}, random weights) classes={len(names)} "
        f"templates={len(DEFAULT_TEMPLATES)} prompts={prompts} input={size}px "
        f"batch={args.batch_size} batches={args.batches} rounds={args.rounds} "
        f"threads={args.threads} device={device}"
    )
    print(
        f"one-off prompt encoding: food_assets build_class_embeddings {encode_project:.2f} s, "
        f"open_clip build_zero_shot_classifier {encode_open_clip:.2f} s"
    )
    print(
        f"logits food_assets vs open_clip recipe: max |diff| {logit_diff:.1e}, "
        f"same top-1 {same_top1:.0%}"
    )
    med = {label: statistics.median(r) for label, r in rates.items()}
    for label, r in rates.items():
        spread = f"min {min(r):.1f}, max {max(r):.1f}"
        print(f"{label:>36}: {med[label]:9.1f} images/s  (median of {len(r)} rounds; {spread})")
    for label, den in (("open_clip", OPEN_CLIP), ("image tower", TOWER)):
        paired = statistics.median(a / b for a, b in zip(rates[PROJECT], rates[den], strict=True))
        print(
            f"{'ratio food_assets / ' + label:>36}: {med[PROJECT] / med[den]:9.2f}x "
            f"(median of per-round ratios {paired:.2f}x)"
        )
    print(f"load average (1 min): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
