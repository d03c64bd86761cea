"""Small pictures of the plots in asset metadata (ADR 0024): each under its size cap, the right
crop, and a run's event log growing by a bounded amount."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from food_assets.defs.assets._pictures import (
    MAX_MARKDOWN_CHARS,
    MAX_WIDTH,
    encode_picture,
    picture,
    picture_markdown,
)

#: Pictures per trained model (confusion matrix, reliability, Grad-CAM tiles), plus the
#: leaderboard's one per run.
PICTURES_PER_MODEL = 3
#: The issue's budgets for the growth of a run's event log: the sample run, a 101-class run.
SAMPLE_BUDGET, FOOD101_BUDGET = 1_000_000, 3_000_000
#: Models that train in configs/sample.yaml (the CLIP entries are skipped offline).
SAMPLE_TRAINED = 5


def _decode(markdown: str) -> Image.Image:
    data = re.search(r"\(data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert data, markdown[:200]
    return Image.open(io.BytesIO(base64.b64decode(data.group(1))))


def test_a_large_noisy_image_is_shrunk_under_the_cap() -> None:
    """A 2,000 px image of noise (the worst case for compression, bigger than any 101-class
    confusion matrix) comes out at most the cap, narrower than `MAX_WIDTH`; a small flat image
    keeps its own width. Breakage tried: returning the first rendering tried (720 px: 10x the
    cap, fails); a loop that never narrows (None, fails)."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (2000, 2000, 3), dtype=np.uint8))
    uri, width = encode_picture(noise, budget=MAX_MARKDOWN_CHARS)
    assert len(uri) <= MAX_MARKDOWN_CHARS and width < MAX_WIDTH
    assert _decode(f"({uri})").width == width
    flat = Image.new("RGB", (300, 200), "white")
    uri, width = encode_picture(flat, budget=MAX_MARKDOWN_CHARS)
    assert width == 300 and len(uri) < 2_000
    md = picture_markdown(noise, "confusion_matrix", "/data/evaluation_x/confusion_matrix.png")
    assert md is not None and len(md) <= MAX_MARKDOWN_CHARS
    assert md.endswith("confusion_matrix, full size: `/data/evaluation_x/confusion_matrix.png`")
    assert picture_markdown(noise, "x", None, max_chars=50) is None  # nothing fits: no picture


def test_picture_stacks_the_first_row_of_each_gallery(tmp_path) -> None:
    """Two galleries (2 and 3 rows of tiles): the picture is the first row of each, stacked.
    Breakage tried: `rows` ignored (the whole galleries: height 500, fails); a missing file
    raising instead of leaving the picture out (fails)."""
    a, b = tmp_path / "correct.png", tmp_path / "wrong.png"
    Image.new("RGB", (400, 200), "red").save(a)  # 2 rows of 100 px
    Image.new("RGB", (400, 300), "blue").save(b)  # 3 rows of 100 px
    meta = picture("gradcam_tiles", [a, b], rows=[2, 3])
    image = _decode(meta["gradcam_tiles_preview"].value).convert("RGB")
    assert image.size == (400, 200)
    assert image.getpixel((10, 50))[0] > 200 and image.getpixel((10, 150))[2] > 200
    assert picture("x", tmp_path / "missing.png") == {}


def _pictures(result) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        for key, value in mat.metadata.items():
            if key.endswith("_preview"):
                out.setdefault(mat.asset_key.to_user_string(), {})[key] = len(value.value)
    return out


@pytest.mark.slow
def test_a_run_embeds_a_bounded_number_of_small_pictures(graph_run) -> None:
    """In the tiny whole-graph run: each trained model's evaluation shows its confusion matrix
    and reliability diagram, its Grad-CAM a strip of tiles, the leaderboard its trade-off plot;
    nothing else embeds a picture, and each is under the cap. So the event log grows by at most
    (3 x trained models + 1) x cap: 640,000 characters for the sample's five trained models,
    under the 1 MB budget, and the same for a 101-class run (under 3 MB): the count does not
    grow with the classes and the cap holds whatever the figure's size.

    Fails (by its arithmetic, not run on purpose) with the cap raised to 400,000 (over the
    sample budget) or a preview of every plot (hardest examples, ROC: the set of keys)."""
    result = graph_run["result"]
    pictures = _pictures(result)
    mats = [
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
    ]
    trained = sorted(
        m.asset_key.to_user_string().removeprefix("model_")
        for m in mats
        if m.asset_key.to_user_string().startswith("model_")
        and not getattr(m.metadata.get("skipped"), "value", False)
    )
    assert trained, "the tiny run trains at least one model"
    expected = {f"evaluation_{m}": {"confusion_matrix_preview", "reliability_preview"}
                for m in trained}  # fmt: skip
    expected.update({f"gradcam_{m}": {"gradcam_tiles_preview"} for m in trained})
    board = {k for k in pictures.get("leaderboard", {})}
    assert board in ({"accuracy_vs_latency_preview"}, {"accuracy_vs_size_preview"})
    assert {k: set(v) for k, v in pictures.items() if k != "leaderboard"} == expected
    sizes = [n for per_asset in pictures.values() for n in per_asset.values()]
    assert max(sizes) <= MAX_MARKDOWN_CHARS
    assert sum(sizes) <= (PICTURES_PER_MODEL * len(trained) + 1) * MAX_MARKDOWN_CHARS
    worst_sample = (PICTURES_PER_MODEL * SAMPLE_TRAINED + 1) * MAX_MARKDOWN_CHARS
    assert worst_sample <= SAMPLE_BUDGET <= FOOD101_BUDGET
