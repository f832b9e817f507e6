"""Labelled image grids (reconstructions, prior samples) as PNG: torchvision lays out the tiles, Pillow writes
the labels.

    grid_image(rows, columns=None, zoom=3) -> PIL.Image       one row of tiles per (label, (n, C, H, W) uint8)
    grid_png(rows, columns=None, zoom=3) -> bytes             the same, PNG-encoded (what pages and reports use)

The tiles are scaled up to about 84 pixels (nearest neighbour: pixels stay pixels) and placed by
`torchvision.utils.make_grid` on a white background; a strip on the left names each row and an optional
strip on top names each column, in a font large enough to read at the grid's own size (DejaVu Sans, which
has Greek, where the system has it; else Pillow's built-in font, with Greek letters spelled out). Rows
without images (originals a run does not carry, with no dataset installed) are left out.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["grid_image", "grid_png"]

TEXT = (17, 24, 39)  # the labels' colour: near black
_GREEK = (("α", "alpha"), ("ν", "nu"), ("μ", "mu"), ("σ", "sigma"), ("ε", "eps"), ("∈", " in "), ("×", "x"))


@functools.lru_cache(maxsize=8)
def _font(size: int) -> tuple[Any, bool]:
    """(a font of `size` pixels, whether it draws Greek)."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), True
    except OSError:
        return ImageFont.load_default(size=size), False


def _text(label: str, greek: bool) -> str:
    if greek:
        return label
    for letter, name in _GREEK:
        label = label.replace(letter, name)
    return label


def _tiles(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(n, 1 or 3, H, W) uint8 -> (n, 3, H, W) float in [0, 1]."""
    x = torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (n, 1 or 3, H, W) uint8; got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


TILE = 84  # pixels a tile is scaled up to, about (28×28 images 3×, 8×8 digits 10×, 32×32 images 3×)


def grid_image(rows: Sequence[tuple[str, np.ndarray | torch.Tensor | None]], columns: Sequence[str] | None = None,
               *, zoom: int | None = None, padding: int = 2, font_size: int = 15):
    """A PIL image: one row of tiles per (label, images), the label at the row's left, `columns` (one name
    per tile position, e.g. each original's class) above. Short rows are padded with white tiles; `zoom`
    (default: about TILE pixels a tile) scales the images up."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    kept = [(label, _tiles(images)) for label, images in rows if images is not None and len(images)]
    if not kept:
        raise ValueError("an image grid needs at least one non-empty row of images")
    shape = kept[0][1].shape[1:]
    if any(t.shape[1:] != shape for _, t in kept):
        raise ValueError("every row of an image grid must hold images of one size")
    cols = max(len(t) for _, t in kept)
    zoom = zoom or max(1, round(TILE / max(shape[1:])))
    blank = torch.ones(1, *shape)
    tiles = torch.cat([torch.cat([t, blank.expand(cols - len(t), -1, -1, -1)]) for _, t in kept])
    tiles = torch.nn.functional.interpolate(tiles, scale_factor=zoom, mode="nearest")
    grid = make_grid(tiles, nrow=cols, padding=padding, pad_value=1.0)
    pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    font, greek = _font(font_size)
    small, _ = _font(max(9, font_size - 3))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [_text(label, greek) for label, _ in kept]
    label_w = 12 + max(int(measure.textlength(t, font=font)) for t in labels)
    head_h = font_size + 8 if columns else 0
    tile_h, tile_w = shape[1] * zoom + padding, shape[2] * zoom + padding
    canvas = Image.new("RGB", (label_w + pixels.shape[1], head_h + pixels.shape[0]), "white")
    canvas.paste(Image.fromarray(pixels), (label_w, head_h))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(labels):
        draw.text((6, head_h + padding + r * tile_h + (tile_h - padding) / 2), text, fill=TEXT, font=font, anchor="lm")
    for c, name in enumerate(list(columns or [])[:cols]):
        text = _text(str(name), greek)
        while len(text) > 3 and measure.textlength(text, font=small) > tile_w - 2:  # keep it inside its tile
            text = text[:-2] + "…"
        draw.text((label_w + padding + c * tile_w + (tile_w - padding) / 2, head_h - 4), text, fill=TEXT, font=small,
                  anchor="md")
    return canvas


def grid_png(rows: Sequence[tuple[str, np.ndarray | torch.Tensor | None]], columns: Sequence[str] | None = None,
             **options: Any) -> bytes:
    """`grid_image(rows, columns, **options)` as PNG bytes."""
    buffer = io.BytesIO()
    grid_image(rows, columns, **options).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
