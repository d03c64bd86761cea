"""CLIP models (open_clip): a zero-shot classifier and a linear probe, both plain `nn.Module`s.

Two registry entries:

- `clip_zero_shot` (family `zero_shot`): `ClipZeroShotClassifier`, the image tower plus a
  class-embedding matrix built ONCE from prompt templates (a buffer, so the bundle carries it).
  Inference never touches the text tower: logits = logit_scale * normalize(visual(x)) @ M.T.
- `clip_linear_probe` (family `probe`): `ClipLinearProbe`, the frozen image tower plus a linear
  head whose weights are copied from a scikit-learn logistic regression (see `clip_fit.py`).

Weights are explicit and offline-first (`resolve_clip_weights`): an open_clip pretrained tag found
in the local Hugging Face cache, a local checkpoint file (`checkpoint`), or random init only when
`allow_random=True`. The Dagster layer asks `clip_weights_available(cfg)` before running.

Rebuilding from a bundle (`build(num_classes=..., weights="none", **build_kwargs)`) needs neither
text nor network: `build_kwargs` hold the architecture name and, for a custom architecture, its
open_clip model config dict.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from food_assets.ml.artifacts import write_json
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.errors import CheckpointError, ConfigError, WeightsNotFoundError
from food_assets.ml.models.registry import ModelSpec, register

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"

#: Prompt templates ensembled by default; `{c}` is the cleaned class name.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of {c}, a type of food.",
    "a photo of {c}, a food dish.",
    "a close-up photo of {c}.",
    "this is a photo of {c}.",
)

#: open_clip's file names inside a Hugging Face model repo (safetensors preferred).
_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

WEIGHT_HELP = (
    "CLIP weights cannot be downloaded on machines without network. Provide them with the config "
    "key `checkpoint`: the path to a local open_clip checkpoint (for ViT-B-32/openai, "
    "`open_clip_model.safetensors` from "
    "https://huggingface.co/timm/vit_base_patch32_clip_224.openai), or copy a Hugging Face "
    "cache that holds it and point HF_HOME or the key `cache_dir` at it."
)

# `visual.transformer.resblocks.-1.ln_1`: the last block's input norm of an open_clip ViT tower;
# `resolve_cam_layer` reads -1 as "the last block", whatever the depth.
CAM_LAYER = "visual.transformer.resblocks.-1.ln_1"


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipConfig:
    """Everything a CLIP asset needs; defaults reproduce OpenAI ViT-B/32.

    Attributes:
        arch: open_clip architecture name (`open_clip.list_models()`), or the name given to
            `model_cfg`.
        weights: open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...), a path to a local
            open_clip checkpoint, or `none` (random init; needs `allow_random`).
        checkpoint: local file (or folder holding `open_clip_model.safetensors` /
            `open_clip_pytorch_model.bin`) with the weights of the `weights` tag; it wins over the
            Hugging Face cache. The tag still supplies preprocessing and QuickGELU.
        model_cfg: a custom open_clip model config dict (`embed_dim`, `vision_cfg`, `text_cfg`),
            registered under `arch`; used by tests with a tiny ViT.
        quick_gelu: force QuickGELU on/off; None takes it from the tag (OpenAI weights need it).
        allow_random: allow `weights="none"` (tests, benchmarks). Predictions are then meaningless.
        allow_download: let open_clip fetch a tag missing from the cache (needs the hub).
        cache_dir: Hugging Face cache folder to look in; None uses HF_HOME / the default.
        extra_templates: prompt templates added to `DEFAULT_TEMPLATES` (`{c}` = class name).
        class_name_overrides: raw class name -> prompt text (`{"pho": "pho noodle soup"}`).
        class_embeddings: path to a `class_embeddings.safetensors` written by an earlier run,
            reused instead of encoding the prompts (its class order and weights must match).
        template_eval_splits: splits on which each template is scored alone (zero-shot).
        batch_size, num_workers: image batches for feature extraction.
        k_shots: images per class for the few-shot probes (skipped where data is too short).
        c_grid: inverse L2 strengths tried on val for the logistic regression.
        max_iter: L-BFGS iterations for the logistic regression.
        seed: k-shot sampling and random init.
        device: `cpu`, `cuda`, `cuda:1`, or `auto`.
    """

    arch: str = DEFAULT_ARCH
    weights: str = DEFAULT_PRETRAINED
    checkpoint: str | None = None
    model_cfg: dict[str, Any] | None = None
    quick_gelu: bool | None = None
    allow_random: bool = False
    allow_download: bool = False
    cache_dir: str | None = None
    extra_templates: tuple[str, ...] = ()
    class_name_overrides: Mapping[str, str] = field(default_factory=dict)
    class_embeddings: str | None = None
    template_eval_splits: tuple[str, ...] = ("val",)
    batch_size: int = 64
    num_workers: int = 0
    k_shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    c_grid: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
    max_iter: int = 1000
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {self.batch_size})")
        if any(int(k) < 1 for k in self.k_shots):
            raise ConfigError(f"k_shots must be positive integers (got {self.k_shots})")
        if not self.c_grid or any(not (float(c) > 0) for c in self.c_grid):
            raise ConfigError(
                f"c_grid must be a non-empty list of positive numbers ({self.c_grid})"
            )
        bad = [s for s in self.template_eval_splits if s not in ("train", "val", "test")]
        if bad:
            raise ConfigError(f"template_eval_splits: unknown split(s) {bad}; use train/val/test")
        self.templates()  # validate early: a typo in a template is a config error, not a crash

    def templates(self) -> tuple[str, ...]:
        """Default templates plus the extra ones, de-duplicated in order."""
        out: list[str] = []
        for t in (*DEFAULT_TEMPLATES, *self.extra_templates):
            if "{c}" not in t or t.count("{") != 1 or t.count("}") != 1:
                raise ConfigError(
                    f"prompt template {t!r} must contain the placeholder {{c}} exactly once "
                    "(and no other braces), e.g. 'a photo of {c}, a type of food.'"
                )
            if t not in out:
                out.append(t)
        return tuple(out)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"device {self.device!r} is not a torch device ({exc})") from exc


def clean_class_name(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """`apple_pie` -> `apple pie`; an override wins."""
    if overrides and name in overrides:
        return overrides[name]
    return " ".join(name.replace("_", " ").split())


def _fill(template: str, name: str) -> str:
    return template.replace("{c}", name)


def template_callables(templates: Sequence[str]) -> list[Callable[[str], str]]:
    # open_clip's builder calls `template.format(c)` on strings (positional), which `{c}` breaks;
    # callables are its other supported form.
    return [functools.partial(_fill, t) for t in templates]


# --------------------------------------------------------------------------------------------
# Architectures and weights
# --------------------------------------------------------------------------------------------


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def register_arch(arch: str, model_cfg: Mapping[str, Any] | None) -> str:
    """Make `arch` known to open_clip; a `model_cfg` is registered with `add_model_config`.

    open_clip names a config after its JSON file, so the dict is written to
    `<tmp>/<hash>/<arch>.json` first. Re-registering the same dict is a no-op; a different dict
    under a taken name is refused (it would silently change what that name builds everywhere).
    """
    import open_clip

    if model_cfg is None:
        if arch not in open_clip.list_models():
            raise ConfigError(
                f"unknown open_clip architecture {arch!r}; pick one of open_clip.list_models() "
                "(e.g. ViT-B-32, ViT-B-16, ViT-L-14) or pass `model_cfg`"
            )
        return arch
    cfg = _canonical(dict(model_cfg))
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - cfg.keys()
    if missing:
        raise ConfigError(f"model_cfg for {arch!r} lacks {sorted(missing)}")
    existing = open_clip.get_model_config(arch)
    if existing is not None:
        if _canonical(existing) == cfg:
            return arch
        raise ConfigError(
            f"open_clip already has a different architecture named {arch!r}; give `model_cfg` "
            "another `arch` name"
        )
    path = (
        Path(tempfile.gettempdir()) / "food_assets-open_clip" / _digest(cfg)[:16] / f"{arch}.json"
    )
    write_json(path, cfg)
    open_clip.add_model_config(path)
    return arch


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the CLIP weights come from, decided without touching the network.

    Attributes:
        kind: `file` (a checkpoint on disk) or `random`.
        checkpoint: the file; None for random init.
        tag: the open_clip pretrained tag, if any (drives preprocessing and QuickGELU).
        tag_cfg: open_clip's pretrained config for the tag ({} when none).
        source: human-readable, goes to `ModelCard.weights_source`.
    """

    kind: Literal["file", "random"]
    checkpoint: Path | None
    tag: str | None
    tag_cfg: dict[str, Any]
    source: str
    seed: int = 0

    def identity(self) -> str:
        """A content identity of the weights (feature-cache key): sha256 of the file."""
        if self.checkpoint is None:
            return f"random-init:seed{self.seed}"
        return "sha256:" + _file_sha256(self.checkpoint)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    # Hashing a 600 MB checkpoint takes about a second; memoise on (path, size, mtime).
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _checkpoint_file(path: str | os.PathLike[str], *, key: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        for name in _HF_FILES:
            if (p / name).is_file():
                return p / name
        raise WeightsNotFoundError(
            f"the folder {p} (config key `{key}`) holds none of {list(_HF_FILES)}. {WEIGHT_HELP}"
        )
    if not p.is_file():
        raise WeightsNotFoundError(
            f"the CLIP checkpoint {p} (config key `{key}`) does not exist. {WEIGHT_HELP}"
        )
    return p


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or value.startswith((".", "~"))
        or Path(value).suffix in {".safetensors", ".bin", ".pt", ".pth"}
    )


def _hf_cached_file(tag_cfg: Mapping[str, Any], cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hub = str(tag_cfg.get("hf_hub") or "")
    if not hub:
        return None
    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file" one file.
    repo, filename = os.path.split(hub)
    repo = repo.rstrip("/")
    names: tuple[str, ...] = (filename,) if filename else _HF_FILES
    if filename.endswith((".bin", ".pth")):
        names = (filename[:-4] + ".safetensors", filename)
    for name in names:
        hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def _hf_cache_location() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolve_clip_weights(cfg: ClipConfig) -> ResolvedWeights:
    """Decide where the weights come from; raise a user-facing error if nowhere.

    Order: `checkpoint` (a local file) > `weights` given as a path > the tag in the local Hugging
    Face cache > a download (only with `allow_download`). Never a silent random init.

    Raises:
        WeightsNotFoundError: no local source holds the weights (the message names the fix).
        ConfigError: unknown tag, or `weights="none"` without `allow_random`.
    """
    import open_clip

    arch = register_arch(cfg.arch, cfg.model_cfg)
    weights = (cfg.weights or "").strip()
    if weights.lower() in ("none", "random", "") and not cfg.checkpoint:
        if not cfg.allow_random:
            raise ConfigError(
                f"weights={cfg.weights!r} would build {arch} with random weights, whose "
                "predictions are meaningless. Set `weights` to a pretrained tag (e.g. openai) or "
                "`checkpoint` to a local file; `allow_random: true` is for tests only."
            )
        return ResolvedWeights(
            "random", None, None, {}, f"random init ({arch}, seed {cfg.seed})", cfg.seed
        )
    if weights.lower() in ("none", "random", ""):
        ckpt = _checkpoint_file(cfg.checkpoint, key="checkpoint")  # type: ignore[arg-type]
        return ResolvedWeights("file", ckpt, None, {}, f"{arch} from {ckpt}")
    if _looks_like_path(weights) or Path(weights).exists():
        ckpt = _checkpoint_file(weights, key="weights")
        return ResolvedWeights("file", ckpt, None, {}, f"{arch} from {ckpt}")

    tag_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ConfigError(
            f"{weights!r} is not an open_clip pretrained tag for {arch}; known tags: "
            f"{', '.join(tags) or '(none: give `checkpoint` a local file)'}"
        )
    tag_cfg = dict(tag_cfg)
    if cfg.checkpoint:
        ckpt = _checkpoint_file(cfg.checkpoint, key="checkpoint")
        return ResolvedWeights("file", ckpt, weights, tag_cfg, f"{arch}/{weights} from {ckpt}")
    cached = _hf_cached_file(tag_cfg, cfg.cache_dir)
    if cached is not None:
        return ResolvedWeights(
            "file",
            cached,
            weights,
            tag_cfg,
            f"{arch}/{weights} from the Hugging Face cache ({cached})",
        )
    hub = str(tag_cfg.get("hf_hub") or "").rstrip("/")
    where = (
        f"https://huggingface.co/{hub}" if hub else str(tag_cfg.get("url") or "the open_clip docs")
    )
    if cfg.allow_download:
        try:
            path = open_clip.download_pretrained(tag_cfg, cache_dir=cfg.cache_dir)
        except Exception as exc:  # hub errors come in many types; all mean "not here"
            raise WeightsNotFoundError(
                f"downloading CLIP weights {arch}/{weights} from {where} failed ({exc}). "
                f"{WEIGHT_HELP}"
            ) from exc
        return ResolvedWeights("file", Path(path), weights, tag_cfg, f"{arch}/{weights} downloaded")
    raise WeightsNotFoundError(
        f"CLIP weights {arch}/{weights} are not on this machine: the Hugging Face cache "
        f"({cfg.cache_dir or _hf_cache_location()}) has no "
        f"{' or '.join(_HF_FILES)} from {where}, and downloads are off. Set the config key "
        f"`checkpoint` to a local copy of that file (get it from {where}), point `cache_dir` / "
        "HF_HOME at a cache that holds it, or set `allow_download: true` where the hub is "
        "reachable."
    )


def clip_weights_available(cfg: ClipConfig) -> tuple[bool, str]:
    """Cheap pre-flight for the Dagster layer: can this config load weights here? (ok, reason)."""
    from food_assets.ml.errors import FoodAssetsError

    try:
        w = resolve_clip_weights(cfg)
    except FoodAssetsError as exc:
        return False, str(exc)
    return True, f"CLIP weights: {w.source}"


def preprocess_from_open_clip(pp: Mapping[str, Any]) -> Preprocess:
    """open_clip's preprocess config -> `Preprocess` (never retyped by hand).

    open_clip evaluates with resize-shortest-side-to-size then centre crop, i.e. crop_pct 1.0.
    `squash`/`longest` resize modes (SigLIP, CLIPA) have no `Preprocess` equivalent and are
    approximated by that same resize-and-crop.
    """
    size = pp.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"non-square CLIP input {tuple(size)} is not supported")
        size = size[0]
    return Preprocess(
        input_size=int(size),
        mean=tuple(float(v) for v in pp["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in pp["std"]),  # type: ignore[arg-type]
        interpolation=str(pp.get("interpolation", "bicubic")),
        crop_pct=1.0,
    )


def default_preprocess(
    arch: str = DEFAULT_ARCH, tag: str | None = DEFAULT_PRETRAINED
) -> Preprocess:
    """Preprocess of an architecture/tag from open_clip's configs, without building the model."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    pp = merge_preprocess_dict(
        PreprocessCfg(), open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    )
    model_cfg = open_clip.get_model_config(arch) or {}
    pp["size"] = model_cfg.get("vision_cfg", {}).get("image_size", pp["size"])
    return preprocess_from_open_clip(pp)


@dataclass
class LoadedClip:
    """An open_clip model with what the fit functions need around it."""

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess: Preprocess
    weights: ResolvedWeights
    arch: str
    model_cfg: dict[str, Any] | None
    quick_gelu: bool
    resize_mode: str = "shortest"

    @property
    def model_id(self) -> str:
        if self.model_cfg is None:
            return self.arch + (
                "-quickgelu" if self.quick_gelu and "quickgelu" not in self.arch else ""
            )
        return f"{self.arch}@{_digest(self.model_cfg)[:12]}"

    def build_kwargs(self) -> dict[str, Any]:
        """What `build(num_classes=..., weights="none", **kw)` needs to rebuild offline."""
        return {"arch": self.arch, "model_cfg": self.model_cfg, "quick_gelu": self.quick_gelu}


def _create_open_clip(
    arch: str,
    *,
    checkpoint: Path | None,
    quick_gelu: bool,
    preprocess_overlay: Mapping[str, Any] | None = None,
) -> nn.Module:
    import open_clip

    try:
        model = open_clip.create_model(
            arch,
            pretrained=str(checkpoint) if checkpoint else None,
            # No hub look-ups for tower weights: an architecture-only build must stay offline.
            pretrained_image=False,
            pretrained_text=False,
            force_quick_gelu=quick_gelu,
            force_preprocess_cfg=dict(preprocess_overlay or {}) or None,
            weights_only=True,
        )
    except RuntimeError as exc:
        if checkpoint is None:
            raise
        raise CheckpointError(
            f"{checkpoint} does not fit open_clip architecture {arch!r}: "
            f"{str(exc).splitlines()[0][:300]}. Set `arch` to the architecture the file was "
            "trained with."
        ) from exc
    return model.eval()


def load_clip(cfg: ClipConfig) -> LoadedClip:
    """Resolve the weights and build the full open_clip model (both towers), eval mode, on CPU."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    weights = resolve_clip_weights(cfg)
    arch = cfg.arch
    base_cfg = open_clip.get_model_config(arch) or {}
    quick_gelu = (
        bool(cfg.quick_gelu)
        if cfg.quick_gelu is not None
        else bool(weights.tag_cfg.get("quick_gelu", False) or base_cfg.get("quick_gelu", False))
    )
    overlay = merge_preprocess_dict(PreprocessCfg(), weights.tag_cfg) if weights.tag_cfg else None
    if overlay is not None:
        overlay.pop("size", None)  # the size comes from the architecture
    # Random init is seeded without disturbing the caller's RNG, so the same config gives the
    # same random weights (and the feature cache can key on the seed).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = _create_open_clip(
            arch, checkpoint=weights.checkpoint, quick_gelu=quick_gelu, preprocess_overlay=overlay
        )
    pp = open_clip.get_model_preprocess_cfg(model)
    tokenizer = open_clip.get_tokenizer(arch, context_length=getattr(model, "context_length", None))
    return LoadedClip(
        model=model,
        tokenizer=tokenizer,
        preprocess=preprocess_from_open_clip(pp),
        weights=weights,
        arch=arch,
        model_cfg=_canonical(dict(cfg.model_cfg)) if cfg.model_cfg is not None else None,
        quick_gelu=quick_gelu,
        resize_mode=str(pp.get("resize_mode", "shortest")),
    )


def _embed_dim(visual: nn.Module) -> int:
    dim = getattr(visual, "output_dim", None)
    if isinstance(dim, int):
        return dim
    raise ConfigError(f"cannot tell the embedding width of {type(visual).__name__}")


# --------------------------------------------------------------------------------------------
# Class embeddings (the zero-shot classifier's text side, computed once)
# --------------------------------------------------------------------------------------------


@dataclass
class ClassEmbeddings:
    """The zero-shot class matrix and the class order it belongs to.

    Attributes:
        matrix: (num_classes, embed_dim), rows L2-normalised, row i <-> class_names[i].
        class_names: raw class names (the split's class map), in row order.
        prompt_names: the names as written into the prompts.
        templates: the templates that were ensembled.
        weights_identity: `ResolvedWeights.identity()` of the text tower that encoded them.
    """

    matrix: torch.Tensor
    class_names: tuple[str, ...]
    prompt_names: tuple[str, ...]
    templates: tuple[str, ...]
    weights_identity: str
    model_id: str = ""


def check_class_order(found: Sequence[str], expected: Sequence[str], *, what: str) -> None:
    """Raise a CheckpointError naming both orders if `found` is not exactly `expected`.

    A class matrix applied to another class order would shift every prediction silently.
    """
    found, expected = tuple(found), tuple(expected)
    if found == expected:
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(found, expected, strict=False)) if a != b),
        min(len(found), len(expected)),
    )
    raise CheckpointError(
        f"{what} was built for another class order than the split's class map "
        f"(first difference at index {first}). {what} order ({len(found)}): {list(found)}; "
        f"split order ({len(expected)}): {list(expected)}. Rebuild it for this split (drop the "
        "`class_embeddings` setting or re-run the model asset) instead of reusing it."
    )


def build_class_embeddings(
    loaded: LoadedClip,
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    overrides: Mapping[str, str] | None = None,
    device: torch.device | str = "cpu",
) -> ClassEmbeddings:
    """Encode every (template, class) prompt once; each row = normalised mean of normalised prompts.

    This is open_clip's `build_zero_shot_classifier` (which returns (D, C)), transposed.
    """
    from open_clip import build_zero_shot_classifier

    prompt_names = tuple(clean_class_name(c, overrides) for c in class_names)
    model = loaded.model.to(device)
    with torch.no_grad():
        weights = build_zero_shot_classifier(
            model,
            loaded.tokenizer,
            classnames=list(prompt_names),
            templates=template_callables(templates),
            num_classes_per_batch=10,  # bounds memory with many templates; still one pass
            device=device,
        )
    return ClassEmbeddings(
        matrix=weights.T.contiguous().float().cpu(),
        class_names=tuple(class_names),
        prompt_names=prompt_names,
        templates=tuple(templates),
        weights_identity=loaded.weights.identity(),
        model_id=loaded.model_id,
    )


def save_class_embeddings(path: str | os.PathLike[str], emb: ClassEmbeddings) -> Path:
    """safetensors with the class order, prompts and templates in its metadata; atomic."""
    from safetensors.torch import save_file

    from food_assets.ml.artifacts import atomic_path

    meta = {
        "class_names": json.dumps(list(emb.class_names)),
        "prompt_names": json.dumps(list(emb.prompt_names)),
        "templates": json.dumps(list(emb.templates)),
        "weights_identity": emb.weights_identity,
        "model_id": emb.model_id,
    }
    with atomic_path(path) as tmp:
        save_file({"class_embeddings": emb.matrix.contiguous()}, str(tmp), metadata=meta)
    return Path(path)


def load_class_embeddings(path: str | os.PathLike[str]) -> ClassEmbeddings:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"class-embedding file {path} does not exist (config key `class_embeddings`)"
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            matrix = fh.get_tensor("class_embeddings")
        return ClassEmbeddings(
            matrix=matrix.float(),
            class_names=tuple(json.loads(meta["class_names"])),
            prompt_names=tuple(json.loads(meta["prompt_names"])),
            templates=tuple(json.loads(meta["templates"])),
            weights_identity=meta["weights_identity"],
            model_id=meta.get("model_id", ""),
        )
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a class-embedding file written by food_assets ({exc})"
        ) from exc


# --------------------------------------------------------------------------------------------
# The modules
# --------------------------------------------------------------------------------------------


class ClipZeroShotClassifier(nn.Module):
    """Image tower + cached class matrix: logits = logit_scale * normalize(visual(x)) @ M.T.

    The text tower is not part of the module: the matrix was encoded once, and the state dict
    (hence the bundle) carries it as the buffer `class_embeddings`.
    """

    def __init__(
        self,
        visual: nn.Module,
        class_embeddings: torch.Tensor,
        *,
        logit_scale: float,
        class_names: Sequence[str],
    ) -> None:
        super().__init__()
        if class_embeddings.ndim != 2 or class_embeddings.shape[0] != len(class_names):
            raise ConfigError(
                f"class matrix of shape {tuple(class_embeddings.shape)} does not fit "
                f"{len(class_names)} class names"
            )
        self.visual = visual
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.class_names = tuple(class_names)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.encode_image(x) @ self.class_embeddings.T

    def set_class_embeddings(self, emb: ClassEmbeddings) -> None:
        """Swap in another matrix; its class order must be this classifier's."""
        check_class_order(emb.class_names, self.class_names, what="the class-embedding matrix")
        if emb.matrix.shape != self.class_embeddings.shape:
            raise CheckpointError(
                f"class matrix {tuple(emb.matrix.shape)} does not fit this model "
                f"{tuple(self.class_embeddings.shape)} (another CLIP architecture?)"
            )
        with torch.no_grad():
            self.class_embeddings.copy_(F.normalize(emb.matrix.float(), dim=-1))


class ClipLinearProbe(nn.Module):
    """Frozen image tower + a linear head on L2-normalised features.

    "Frozen" means the head is fitted by scikit-learn on cached features and nothing here is
    trained; the tower's parameters keep `requires_grad` so that Grad-CAM can still backpropagate.
    """

    def __init__(
        self, visual: nn.Module, num_classes: int, class_names: Sequence[str] | None = None
    ):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(_embed_dim(visual), num_classes)
        self.class_names = (
            tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
        )

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode_image(x))

    def set_head_from_sklearn(self, coef: Any, intercept: Any) -> None:
        """Copy a fitted `LogisticRegression` so that logits == its decision_function.

        Binary problems have one row (`d = w.x + b`); it becomes [-d/2, +d/2], whose softmax is
        sklearn's sigmoid probability and whose difference is `d`.
        """
        w = torch.as_tensor(coef, dtype=torch.float32)
        b = torch.as_tensor(intercept, dtype=torch.float32)
        if w.shape[0] == 1 and self.head.out_features == 2:
            w, b = torch.cat([-w / 2, w / 2]), torch.cat([-b / 2, b / 2])
        if tuple(w.shape) != tuple(self.head.weight.shape):
            raise ConfigError(
                f"coefficients {tuple(w.shape)} do not fit the head {tuple(self.head.weight.shape)}"
            )
        with torch.no_grad():
            self.head.weight.copy_(w)
            self.head.bias.copy_(b)


def vit_tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """Grad-CAM reshape for open_clip ViTs: (N, 1 + H*W, C) tokens -> (N, C, H, W).

    open_clip 3.x runs its transformer batch-first (`Transformer(batch_first=True)`), and the
    class token is token 0; it is dropped, the patch tokens form the square grid.
    """
    if tokens.ndim != 3:
        raise ValueError(f"expected (N, tokens, C) activations, got shape {tuple(tokens.shape)}")
    patches = tokens[:, 1:, :]
    n, length, c = patches.shape
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"{length} patch tokens do not form a square grid")
    return patches.reshape(n, side, side, c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# Registry builders
# --------------------------------------------------------------------------------------------


def _config_for_build(
    arch: str,
    weights: str,
    model_cfg: dict[str, Any] | None,
    quick_gelu: bool | None,
    checkpoint: str | None,
) -> ClipConfig:
    return ClipConfig(
        arch=arch,
        weights=weights,
        model_cfg=model_cfg,
        quick_gelu=quick_gelu,
        checkpoint=checkpoint,
    )


def _architecture_only(arch: str, model_cfg: dict[str, Any] | None, quick_gelu: bool) -> nn.Module:
    register_arch(arch, model_cfg)
    return _create_open_clip(arch, checkpoint=None, quick_gelu=quick_gelu)


def build_clip_zero_shot(
    *,
    num_classes: int,
    weights: str = "none",
    arch: str = DEFAULT_ARCH,
    model_cfg: dict[str, Any] | None = None,
    quick_gelu: bool | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: str | None = None,
) -> ClipZeroShotClassifier:
    """Registry builder.

    `weights="none"`: the architecture only, with a zero class matrix, ready for a bundle's state
    dict (no text, no network). Otherwise loads the weights and encodes the default templates for
    `class_names` (a convenience for notebooks; the asset uses `fit_clip_zero_shot`).
    """
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for num_classes={num_classes}")
    if weights == "none":
        model = _architecture_only(arch, model_cfg, bool(quick_gelu))
        dim = _embed_dim(model.visual)
        return ClipZeroShotClassifier(
            model.visual, torch.zeros(num_classes, dim), logit_scale=100.0, class_names=names
        )
    if not class_names:
        raise ConfigError("a pretrained clip_zero_shot needs `class_names` to encode its prompts")
    loaded = load_clip(_config_for_build(arch, weights, model_cfg, quick_gelu, checkpoint))
    emb = build_class_embeddings(loaded, names, DEFAULT_TEMPLATES)
    return ClipZeroShotClassifier(
        loaded.model.visual,
        emb.matrix,
        logit_scale=float(loaded.model.logit_scale.detach().exp()),
        class_names=names,
    )


def build_clip_linear_probe(
    *,
    num_classes: int,
    weights: str = "none",
    arch: str = DEFAULT_ARCH,
    model_cfg: dict[str, Any] | None = None,
    quick_gelu: bool | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: str | None = None,
) -> ClipLinearProbe:
    """Registry builder: image tower (random with `weights="none"`) + an unfitted linear head."""
    if weights == "none":
        visual = _architecture_only(arch, model_cfg, bool(quick_gelu)).visual
    else:
        visual = load_clip(
            _config_for_build(arch, weights, model_cfg, quick_gelu, checkpoint)
        ).model.visual
    return ClipLinearProbe(visual, num_classes, class_names)


register(
    ModelSpec(
        name="clip_zero_shot",
        family="zero_shot",
        build=build_clip_zero_shot,
        preprocess=default_preprocess,
        cam_layer=CAM_LAYER,
        cam_reshape=vit_tokens_to_map,
        onnx=True,
        default_weights=DEFAULT_PRETRAINED,
        weight_help=WEIGHT_HELP,
        description="CLIP ViT-B/32 zero-shot: a prompt-ensembled class matrix, no training",
    )
)
register(
    ModelSpec(
        name="clip_linear_probe",
        family="probe",
        build=build_clip_linear_probe,
        preprocess=default_preprocess,
        cam_layer=CAM_LAYER,
        cam_reshape=vit_tokens_to_map,
        onnx=True,
        default_weights=DEFAULT_PRETRAINED,
        weight_help=WEIGHT_HELP,
        description="CLIP ViT-B/32 linear probe: logistic regression on frozen image features",
    )
)


def __getattr__(name: str) -> Any:
    # The fit functions live in clip_fit.py (sklearn, matplotlib); re-exported lazily so that
    # `from food_assets.ml.models.clip import fit_clip_zero_shot` works without import cycles.
    if name in ("fit_clip_zero_shot", "fit_clip_linear_probe"):
        from food_assets.ml.models import clip_fit

        return getattr(clip_fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
