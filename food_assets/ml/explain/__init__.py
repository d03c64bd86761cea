"""Grad-CAM galleries and the sanity checks that say whether a CAM is about the object."""

from food_assets.ml.explain.gradcam import (
    GradcamResult,
    GradcamTile,
    build_gradcam_report,
    compute_cams,
    open_gradcam,
    overlay,
    render_gallery,
    tile_boxes,
)
from food_assets.ml.explain.sanity import (
    deletion_test,
    map_box_to_input,
    pointing_baseline,
    pointing_game,
    random_pointing_game,
    top_fraction_mask,
)

__all__ = [
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
