"""The contact sheet: every input file in one picture, kept ones with their crop, rejected ones with the reason.

Drawn with PIL rather than matplotlib: it is a fixed layout of thumbnails and short text, and PIL draws a
sheet of 30 photos in a fraction of a second.
"""

from __future__ import annotations

import textwrap
from functools import cache

from PIL import Image, ImageDraw, ImageFont

PANEL = 200  # side of each thumbnail panel (px)
GAP = 8
TEXT_LINES = 4
LINE_HEIGHT = 15
COLUMNS = 4
KEPT_COLOR = (22, 130, 60)
OVERRIDE_COLOR = (190, 120, 0)
REJECTED_COLOR = (200, 30, 30)
FACE_COLOR = (255, 200, 0)


@cache
def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(image: Image.Image, side: int) -> tuple[Image.Image, float, tuple[int, int]]:
    """The image scaled into a side x side grey panel; returns (panel, scale, offset)."""
    scale = min(side / image.width, side / image.height)
    resized = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    panel = Image.new("RGB", (side, side), (235, 235, 235))
    offset = ((side - resized.width) // 2, (side - resized.height) // 2)
    panel.paste(resized, offset)
    return panel, scale, offset


def _original_panel(photo) -> Image.Image:
    """The upright photo with its face box (yellow) and crop box (green) drawn on it."""
    if photo.thumbnail is None:
        panel = Image.new("RGB", (PANEL, PANEL), (215, 215, 215))
        ImageDraw.Draw(panel).text(
            (PANEL // 2, PANEL // 2), "unreadable", fill=(90, 90, 90), anchor="mm", font=_font(14)
        )
        return panel
    panel, scale, (dx, dy) = _fit(photo.thumbnail, PANEL)
    to_panel = scale * photo.thumbnail.width / (photo.original_size[0] * photo.scale)
    draw = ImageDraw.Draw(panel)

    def box(values, color, width):
        left, top, right, bottom = (value * to_panel for value in values)
        draw.rectangle((left + dx, top + dy, right + dx, bottom + dy), outline=color, width=width)

    if photo.face is not None:
        box(photo.face.box, FACE_COLOR, 2)
    for crop in photo.crops[:2]:
        box(crop.box, KEPT_COLOR if photo.kept else (150, 150, 150), 2)
    return panel


def _reason_panel(photo) -> Image.Image:
    panel = Image.new("RGB", (PANEL, PANEL), (255, 240, 240))
    draw = ImageDraw.Draw(panel)
    text = " ".join(r.sentence.removeprefix(photo.name).strip() for r in photo.rejections) or "rejected"
    lines = textwrap.wrap(text, width=30)[:12]
    draw.multiline_text((8, 8), "\n".join(lines), fill=REJECTED_COLOR, font=_font(12), spacing=3)
    return panel


def _cell(photo, entries) -> Image.Image:
    width = 2 * PANEL + GAP
    cell = Image.new("RGB", (width, PANEL + TEXT_LINES * LINE_HEIGHT + GAP), "white")
    cell.paste(_original_panel(photo), (0, 0))
    if photo.kept and photo.crops:
        cell.paste(_fit(photo.crops[0].image, PANEL)[0], (PANEL + GAP, 0))
        color = OVERRIDE_COLOR if photo.rejections else KEPT_COLOR
        outputs = ", ".join(entry.file_name.removeprefix("images/") for entry in entries)
        status = f"{photo.status} -> {outputs}"
        details = []
        if photo.face_px:
            details.append(f"face {photo.face_px}px")
        if photo.sharpness is not None:
            details.append(f"sharp {photo.sharpness:.0f}")
        if photo.identity_distance is not None:
            details.append(f"id {photo.identity_distance:.2f}")
        if photo.crops[0].upscaled:
            details.append(f"upscaled {photo.crops[0].upscale:.1f}x")
        extra = [", ".join(details)]
    else:
        cell.paste(_reason_panel(photo), (PANEL + GAP, 0))
        color = REJECTED_COLOR
        status = "rejected: " + ", ".join(r.check.replace("_", " ") for r in photo.rejections)
        extra = []
    draw = ImageDraw.Draw(cell)
    lines = [(line, "black") for line in textwrap.wrap(photo.name, width=58)[:2]]
    lines += [(status, color)] + [(line, (90, 90, 90)) for line in extra]
    for index, (line, fill) in enumerate(lines[:TEXT_LINES]):
        draw.text((2, PANEL + 3 + index * LINE_HEIGHT), line, fill=fill, font=_font(12))
    draw.rectangle((0, 0, width - 1, PANEL - 1), outline=color, width=3)
    return cell


def contact_sheet(result, columns: int = COLUMNS) -> Image.Image:
    """Every input file: original (face box yellow, crop box green) beside its crop, or beside the reason."""
    by_photo: dict[str, list] = {}
    for entry in result.entries:
        by_photo.setdefault(entry.photo.name, []).append(entry)
    # Kept photos first, then rejected ones, each group in file order.
    photos = [p for p in result.photos if p.kept] + [p for p in result.photos if not p.kept]
    cells = [_cell(photo, by_photo.get(photo.name, [])) for photo in photos]
    cell_width, cell_height = cells[0].size if cells else (2 * PANEL + GAP, PANEL)
    columns = max(1, min(columns, len(cells)))
    rows = -(-len(cells) // columns)
    header = 30
    sheet = Image.new("RGB", (columns * (cell_width + GAP) + GAP, header + rows * (cell_height + GAP) + GAP), "white")
    ImageDraw.Draw(sheet).text((GAP, 8), f"Capture: {result.summary()}", fill="black", font=_font(16))
    for index, cell in enumerate(cells):
        row, column = divmod(index, columns)
        sheet.paste(cell, (GAP + column * (cell_width + GAP), header + row * (cell_height + GAP)))
    return sheet
