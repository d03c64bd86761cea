"""The zero-shot classifier's text side: prompts, class names, and the class matrix built once.

`build_class_embeddings` encodes every (template, class) prompt with the text tower and averages
them per class (open_clip's `build_zero_shot_classifier`). The matrix is saved with its class
order, prompts and the identity of the weights that encoded it, so a later run can reuse it only
where it fits.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from food_assets.ml.errors import CheckpointError
from food_assets.ml.models.clip.loading import LoadedClip

# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


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
# Class embeddings (computed once)
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
