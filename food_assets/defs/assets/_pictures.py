"""Small renderings of the plots, embedded in asset metadata so the Dagster UI shows them.

A plot's full-size PNG stays a file under the artifact root, referenced by path
(`_common.file_ref`); a path on the server's disk does not open in a browser, so a few
pictures also travel as Markdown images with the bytes inline (data URIs): the confusion matrix
and reliability diagram of each evaluation, a strip of Grad-CAM tiles, the leaderboard's
accuracy-vs-latency plot. Each is shrunk until its Markdown fits `MAX_MARKDOWN_CHARS`, so a run's
event log grows by a bounded amount (ADR 0024; `benchmarks/event_log_size.py` measures it):
at most `MAX_MARKDOWN_CHARS` per picture, four pictures per model plus one.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

#: The most characters one picture's Markdown may take (data URI, alt text and link line).
MAX_MARKDOWN_CHARS = 40_000
#: The widest rendering tried first, in pixels; narrower ones follow until it fits.
MAX_WIDTH = 720
#: The narrowest rendering tried; a picture that does not fit even then is left out.
MIN_WIDTH = 96


def _encodings(image: Any) -> list[tuple[str, bytes]]:
    """The image as PNG (plots: flat colours compress well) and JPEG (photos, heat maps)."""
    out = []
    png = io.BytesIO()
    image.save(png, format="PNG", optimize=True)
    out.append(("image/png", png.getvalue()))
    jpeg = io.BytesIO()
    image.convert("RGB").save(jpeg, format="JPEG", quality=80, optimize=True)
    out.append(("image/jpeg", jpeg.getvalue()))
    return out


def encode_picture(image: Any, *, budget: int) -> tuple[str, int] | None:
    """A data URI of a PIL image at most `budget` characters long: the widest rendering (from
    `MAX_WIDTH` down) whose smaller encoding fits. Returns (data URI, width in pixels), or None
    when even `MIN_WIDTH` (or the image's own width, if smaller) does not fit."""
    import math

    from PIL import Image

    width = min(image.width, MAX_WIDTH)
    floor = min(MIN_WIDTH, width)
    while width >= floor:
        height = max(1, round(image.height * width / image.width))
        small = image if width == image.width else image.resize((width, height), Image.LANCZOS)
        mime, data = min(_encodings(small), key=lambda e: len(e[1]))
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        if len(uri) <= budget:
            return uri, width
        if width == floor:
            break
        # Bytes scale about with the pixel count: jump near the width that fits, then step.
        guess = int(width * min(0.85, 0.95 * math.sqrt(budget / len(uri))))
        width = max(floor, guess)
    return None


def picture_markdown(
    image: Any, title: str, full_size: str | None, *, max_chars: int = MAX_MARKDOWN_CHARS
) -> str | None:
    """A Markdown image of `image` (alt text `title`), then a line naming the full-size file;
    at most `max_chars` characters, or None when no rendering fits."""
    tail = f"\n\n{title}, full size: `{full_size}`" if full_size else ""
    head = f"![{title}]("
    encoded = encode_picture(image, budget=max_chars - len(head) - 1 - len(tail))
    if encoded is None:
        return None
    return f"{head}{encoded[0]}){tail}"


def picture(
    name: str,
    paths: Path | Sequence[Path],
    store: Any = None,
    *,
    rows: Sequence[int] | None = None,
) -> dict[str, dg.MetadataValue]:
    """`{<name>_preview: Markdown picture}` for the PNG at `paths` (several: stacked top to
    bottom); `{}` when a file is missing or unreadable, or no rendering fits (the path entries
    still say where the files are).

    Args:
        name: the metadata key's stem and the picture's title.
        paths: the full-size PNG(s) under the artifact root.
        store: the artifact store, for the full-size file's location (a URL for a remote root).
        rows: per path, the number of rows of tiles it has: only the first row is kept (the
            first tiles of a Grad-CAM gallery). None: whole images.
    """
    from PIL import Image, UnidentifiedImageError

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    try:
        images = []
        for k, path in enumerate(paths):
            with Image.open(path) as im:
                im = im.convert("RGB")
            n_rows = rows[k] if rows is not None else 1
            if n_rows > 1:
                im = im.crop((0, 0, im.width, im.height // n_rows))
            images.append(im)
    except (OSError, UnidentifiedImageError):
        return {}
    if not images:
        return {}
    image = images[0]
    if len(images) > 1:
        size = (max(i.width for i in images), sum(i.height for i in images))
        image = Image.new("RGB", size, "white")
        y = 0
        for im in images:
            image.paste(im, (0, y))
            y += im.height
    full = ", ".join(store.location(p) if store is not None else str(p) for p in paths)
    text = picture_markdown(image, name, full)
    return {} if text is None else {f"{name}_preview": dg.MetadataValue.md(text)}
