"""CLIP models (open_clip): a zero-shot classifier and a linear probe, both plain `nn.Module`s.

Importing this package registers the registry entries (`clip_zero_shot`, `clip_linear_probe`,
`clip_vit_l14_zero_shot`; the registry imports it by name). The modules, each readable on its own:

| module | what |
|---|---|
| `config.py` | `ClipConfig`, `ClipProbeConfig` and the defaults (arch, tag, prompt templates) |
| `arch.py` | registering custom open_clip architectures (tiny test towers) |
| `weights.py` | where the weights come from (`resolve_clip_weights`): checkpoint, cache, hub |
| `loading.py` | `load_clip`, `LoadedClip`, preprocessing from open_clip's config |
| `text.py` | prompts, class-name cleaning, the class-embedding matrix (build, save, load) |
| `modules.py` | `ClipZeroShotClassifier`, `ClipLinearProbe`, the ViT Grad-CAM reshape, builders |
| `zero_shot.py` | choosing the class matrix and scoring each prompt template |
| `probe.py` | the probe's logistic regression and k-shot runs (scikit-learn) |
| `metadata.py` | the model card and metadata of a CLIP fit |
| `fit.py` | `fit_clip_zero_shot`, `fit_clip_linear_probe`, the feature cache, the fit hooks |

Imports go one way, top to bottom of that table (`fit` imports the others, nothing imports
`fit` but this file), so the package has no import cycle.
"""

import functools

from food_assets.ml.models.clip.config import (
    CAM_LAYER,
    DEFAULT_ARCH,
    DEFAULT_PRETRAINED,
    DEFAULT_TEMPLATES,
    WEIGHT_HELP,
    ClipConfig,
    ClipProbeConfig,
)
from food_assets.ml.models.clip.fit import (
    fit_clip_linear_probe,
    fit_clip_zero_shot,
    fit_linear_probe,
    fit_zero_shot,
)
from food_assets.ml.models.clip.loading import (
    LoadedClip,
    ResolvedWeights,
    _create_open_clip,  # noqa: F401  (tests build tiny random towers with it)
    clip_weights_available,
    default_preprocess,
    load_clip,
    preprocess_from_open_clip,
    register_arch,
    resolve_clip_weights,
)
from food_assets.ml.models.clip.modules import (
    ClipLinearProbe,
    ClipZeroShotClassifier,
    build_clip_linear_probe,
    build_clip_zero_shot,
    vit_tokens_to_map,
)
from food_assets.ml.models.clip.text import (
    ClassEmbeddings,
    build_class_embeddings,
    check_class_order,
    clean_class_name,
    load_class_embeddings,
    save_class_embeddings,
    template_callables,
)
from food_assets.ml.models.registry import ModelSpec, register

# One entry per model: the builder, preprocessing, Grad-CAM layer and defaults are data; the fit
# hook names the card after the entry. A second architecture is one more entry.
_CLIP_ENTRY: dict = dict(
    cam_layer=CAM_LAYER,
    cam_reshape=vit_tokens_to_map,
    onnx=True,
    default_weights=DEFAULT_PRETRAINED,
    kinds=("pytorch", "clip"),
)

register(
    ModelSpec(
        name="clip_zero_shot",
        family="zero_shot",
        build=build_clip_zero_shot,
        preprocess=default_preprocess,
        fit=fit_zero_shot,
        config_cls=ClipConfig,
        description="CLIP ViT-B/32 zero-shot: a prompt-ensembled class matrix, no training",
        # sample: 0.0, its random-weight stand-in here answers at chance (no CLIP weights).
        accuracy_floors={"food101": 0.80, "sample": 0.0},
        **_CLIP_ENTRY,
    )
)
register(
    ModelSpec(
        name="clip_linear_probe",
        family="probe",
        build=build_clip_linear_probe,
        preprocess=default_preprocess,
        fit=fit_linear_probe,
        config_cls=ClipProbeConfig,
        description="CLIP ViT-B/32 linear probe: logistic regression on frozen image features",
        accuracy_floors={"food101": 0.85, "sample": 0.0},
        **_CLIP_ENTRY,
    )
)
register(
    ModelSpec(
        name="clip_vit_l14_zero_shot",
        family="zero_shot",
        # partial, not a lambda: specs stay picklable. A bundle's build_kwargs (its arch) win.
        build=functools.partial(build_clip_zero_shot, arch="ViT-L-14"),
        preprocess=functools.partial(default_preprocess, "ViT-L-14", DEFAULT_PRETRAINED),
        fit=fit_zero_shot,
        config_cls=ClipConfig,
        config_defaults={"arch": "ViT-L-14"},
        description="CLIP ViT-L/14 zero-shot (OpenAI weights; a 304 M-param image tower at "
        "224 px): the same prompt ensemble on a larger tower",
        **_CLIP_ENTRY,
    )
)

__all__ = [
    "CAM_LAYER",
    "DEFAULT_ARCH",
    "DEFAULT_PRETRAINED",
    "DEFAULT_TEMPLATES",
    "WEIGHT_HELP",
    "ClassEmbeddings",
    "ClipConfig",
    "ClipProbeConfig",
    "ClipLinearProbe",
    "ClipZeroShotClassifier",
    "LoadedClip",
    "ResolvedWeights",
    "build_class_embeddings",
    "build_clip_linear_probe",
    "build_clip_zero_shot",
    "check_class_order",
    "clean_class_name",
    "clip_weights_available",
    "default_preprocess",
    "fit_clip_linear_probe",
    "fit_clip_zero_shot",
    "fit_linear_probe",
    "fit_zero_shot",
    "load_class_embeddings",
    "load_clip",
    "preprocess_from_open_clip",
    "register_arch",
    "resolve_clip_weights",
    "save_class_embeddings",
    "template_callables",
    "vit_tokens_to_map",
]
