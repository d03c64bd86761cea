"""Grad-CAM galleries and the sanity checks that say whether a CAM is about the object.

| module | what |
|---|---|
| `cams.py` | `compute_cams`, `open_gradcam`: CAM maps, the library's hooks always released |
| `rendering.py` | `overlay`, `render_gallery`, `tile_boxes`: the heat map and the gallery PNG |
| `sampling.py` | which images a report shows: the pool, its predictions, the picks |
| `sanity.py` | pointing game and deletion test |
| `report.py` | `build_gradcam_report` (settings: `GradcamOptions`): the report folder |
"""

from food_assets.ml.explain.cams import compute_cams, open_gradcam
from food_assets.ml.explain.rendering import GradcamTile, overlay, render_gallery, tile_boxes
from food_assets.ml.explain.report import GradcamOptions, GradcamResult, build_gradcam_report
from food_assets.ml.explain.sanity import (
    deletion_test,
    map_box_to_input,
    pointing_baseline,
    pointing_game,
    random_pointing_game,
    top_fraction_mask,
)

__all__ = [
    "GradcamOptions",
    "GradcamResult",
    "GradcamTile",
    "build_gradcam_report",
    "compute_cams",
    "deletion_test",
    "map_box_to_input",
    "open_gradcam",
    "overlay",
    "pointing_baseline",
    "pointing_game",
    "random_pointing_game",
    "render_gallery",
    "tile_boxes",
    "top_fraction_mask",
]
