"""Face-centred square crops at the training resolution, and the face masks that go with them.

The crop keeps head and shoulders: its side is `crop_scale` times the face's width and the face sits a
little above the centre. Near an edge the crop first shrinks (down to a tighter framing) so the face stays
centred, and only then slides to stay inside the photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdxlab import faces
from sdxlab.faces import Face

# crop side / face width: 1.5 is the face with a little hair (the demo: at 128 px its eyes and mouth stay a few latent
# pixels wide, so its tiny model can learn them), 2 face and hair, 3 head and shoulders (the sdxl profile, at 1024 px)
CROP_SCALE = 1.5
LOOSE_CROP_FACTOR = 1.6  # the optional second crop is this much wider than the first
TIGHTEST_SCALE = 1.8  # near an edge, the crop may shrink to this (face and hair) before it slides off-centre
SHOULDER_SHIFT = 0.25  # crop centre below the face centre, in face heights, to show shoulders not sky


@dataclass(frozen=True)
class Crop:
    box: tuple[int, int, int, int]  # left, top, right, bottom in the decoded upright photo's pixels
    image: Image.Image  # resolution x resolution RGB
    face: Face  # the face in the crop's pixels
    upscale: float  # output pixels per source pixel (> 1: the crop was enlarged)

    @property
    def upscaled(self) -> bool:
        return self.upscale > 1.0 + 1e-6


def crop_box(face: Face, image_size: tuple[int, int], crop_scale: float = CROP_SCALE) -> tuple[int, int, int, int]:
    """A square around the face, inside the image, as centred on the face as the image allows."""
    width, height = image_size
    centre_x, centre_y = face.center
    centre_y += SHOULDER_SHIFT * face.height
    side = min(crop_scale * face.width, width, height)
    room = 2 * min(centre_x, width - centre_x, centre_y, height - centre_y)  # largest centred square that fits
    if side > room:
        side = max(room, min(TIGHTEST_SCALE * face.width, side))
    side = max(1, round(side))
    left = int(round(min(max(centre_x - side / 2, 0), width - side)))
    top = int(round(min(max(centre_y - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def face_in_box(face: Face, box: tuple[int, int, int, int], resolution: int) -> Face:
    """The face mapped into a crop of `box` resized to resolution x resolution."""
    factor = resolution / (box[2] - box[0])
    offset = np.array(box[:2], dtype=np.float64)
    landmarks = (np.asarray(face.landmarks, dtype=np.float64) - offset) * factor
    mapped = tuple(int(round((value - box[index % 2]) * factor)) for index, value in enumerate(face.box))
    return Face(box=mapped, score=face.score, landmarks=landmarks)


def make_crop(image: Image.Image, face: Face, resolution: int, crop_scale: float = CROP_SCALE) -> Crop:
    """Cut the square around `face` and resize it to the training resolution with Lanczos (good both ways)."""
    box = crop_box(face, image.size, crop_scale)
    side = box[2] - box[0]
    resized = image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    return Crop(box=box, image=resized, face=face_in_box(face, box, resolution), upscale=resolution / side)


def crop_mask(crop: Crop, background_weight: float) -> Image.Image:
    """The loss-weight mask for a crop: 255 on the face, round(255 * background_weight) elsewhere."""
    return faces.face_mask(crop.image.size, crop.face, background_weight)
