"""sdxlab.faces on real photos: skimage's astronaut (one face), coffee (none), insightface's group photo (six people)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from sdxlab import faces


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def test_model_files_are_found_without_importing_face_recognition_models():
    # face_recognition_models' __init__ needs pkg_resources; importing it must never be required.
    code = (
        "import sys; from sdxlab import faces; "
        "assert all(faces.model_path(name).is_file() for name in faces.MODEL_FILES); "
        "faces.load_model('landmarks_68'); "
        "assert 'face_recognition_models' not in sys.modules, 'face_recognition_models was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_astronaut_has_one_main_face_and_the_mission_patch_is_ignored(astronaut):
    detected = faces.detect_faces(astronaut, upsample=1)
    face = faces.main_face(astronaut, upsample=1)
    assert face is not None
    # Her face is in the upper middle of the 512x512 portrait, about 90 px wide.
    assert 150 < face.center[0] < 290 and 60 < face.center[1] < 190
    assert 70 <= face.width <= 120
    assert face.landmarks.shape == (68, 2)
    left, top, right, bottom = face.box
    assert ((face.landmarks[:, 0] > left - 15) & (face.landmarks[:, 0] < right + 15)).all()
    # Any other detection (the patch at upsample 1) is doubtful, ranked after the face and dropped by main_face.
    assert detected[0].box == face.box
    assert all(other.score < faces.MIN_FACE_SCORE for other in detected[1:])


def test_coffee_has_no_face():
    assert faces.main_face(data.coffee()) is None
    assert faces.embed_main_face(data.coffee()) is None


def test_big_images_are_detected_on_a_small_copy_and_boxes_map_back(astronaut):
    small = faces.main_face(astronaut)
    big_image = astronaut.resize((2048, 2048), Image.Resampling.BICUBIC)
    big = faces.main_face(big_image)
    assert big is not None
    # Four times the size: the same face at four times the coordinates (HOG's scale steps move the box a
    # little, so compare within a tenth of the face's size).
    tolerance = 0.1 * big.width
    assert np.allclose(np.array(big.center), np.array(small.center) * 4, atol=tolerance)
    assert abs(big.width - 4 * small.width) < tolerance
    assert np.abs(big.landmarks - small.landmarks * 4).mean() < tolerance


def test_arrays_and_images_give_the_same_faces(astronaut):
    from_array = faces.main_face(np.asarray(astronaut))
    from_gray = faces.main_face(astronaut.convert("L"))
    assert from_array is not None and from_gray is not None
    assert from_array.box == faces.main_face(astronaut).box
    assert abs(from_gray.center[0] - from_array.center[0]) < 10


def test_same_person_is_closer_than_other_people(astronaut, group_photo):
    reference = faces.embed_main_face(astronaut)
    assert reference.shape == (128,) and reference.dtype == np.float32
    # Same person: mirrored and re-lit copies of her portrait.
    mirrored = faces.embed_main_face(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    darker = faces.embed_main_face(Image.eval(astronaut, lambda value: int(value * 0.7)))
    same = [faces.identity_distance(reference, other) for other in (mirrored, darker)]
    # Other people: the six faces of the group photo.
    group_faces = faces.detect_faces(group_photo)
    assert len([face for face in group_faces if face.score >= faces.MIN_FACE_SCORE]) == 6
    strangers = [faces.face_embedding(group_photo, face) for face in group_faces]
    other = [faces.identity_distance(reference, stranger) for stranger in strangers]
    between_strangers = [faces.identity_distance(a, b) for a, b in itertools.combinations(strangers, 2)]
    assert max(same) < faces.SAME_PERSON_DISTANCE < min(other)
    assert min(between_strangers) > max(same)
    assert faces.identity_similarity(reference, mirrored) > max(
        faces.identity_similarity(reference, stranger) for stranger in strangers
    )


def test_identity_measures_on_known_vectors():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    assert faces.identity_distance(a, b) == pytest.approx(5**0.5)
    assert faces.identity_similarity(a, b) == pytest.approx(0.0)
    assert faces.identity_similarity(a, 3 * a) == pytest.approx(1.0)


def test_face_mask_weights_face_fully_and_background_as_asked(astronaut):
    face = faces.main_face(astronaut)
    mask = faces.face_mask(astronaut.size, face, background_weight=0.3)
    pixels = np.asarray(mask)
    assert mask.mode == "L" and mask.size == astronaut.size
    # Every landmark (eyes, nose, mouth, jaw) is fully weighted; the corners are background.
    for x, y in face.landmarks.round().astype(int):
        assert pixels[y, x] == 255
    assert pixels[0, 0] == pixels[-1, -1] == round(255 * 0.3)
    # The forehead above the brows counts as face too.
    brow_x, brow_y = face.landmarks[17:27].mean(axis=0).round().astype(int)
    assert pixels[brow_y - face.height // 5, brow_x] == 255
    # The face region is face-sized: larger than the box's inner part, far smaller than the image.
    face_fraction = (pixels == 255).mean()
    assert 0.5 * face.area / pixels.size < face_fraction < 4 * face.area / pixels.size


def test_face_mask_rejects_a_weight_outside_0_to_1(astronaut):
    with pytest.raises(ValueError, match="background_weight"):
        faces.face_mask(astronaut.size, faces.main_face(astronaut), background_weight=1.5)


@pytest.mark.slow
def test_cnn_detector_finds_the_astronaut(astronaut):
    face = faces.main_face(astronaut.resize((256, 256)), upsample=1, detector="cnn", min_score=0.3)
    assert face is not None
    assert 60 < face.center[0] < 150 and 20 < face.center[1] < 100
