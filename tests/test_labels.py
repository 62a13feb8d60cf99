"""The tiny model is recognised one way and labelled with one text, wherever its numbers are shown."""

from sdxlab.labels import RANDOM_WEIGHTS_NOTE, TINY_MODEL, is_random_weights, random_weights_note


def test_the_tiny_model_is_recognised_by_its_name_for_the_generator_and_clip():
    assert is_random_weights(TINY_MODEL) and is_random_weights("stabilityai/stable-diffusion-xl-base-1.0", "tiny")
    assert not is_random_weights("stabilityai/stable-diffusion-xl-base-1.0", "openai/clip-vit-large-patch14")
    assert not is_random_weights(None) and not is_random_weights()


def test_the_note_says_the_scores_are_meaningless_and_is_empty_for_real_models():
    assert random_weights_note("real/model", "tiny") == RANDOM_WEIGHTS_NOTE
    assert "meaningless" in RANDOM_WEIGHTS_NOTE and "random" in RANDOM_WEIGHTS_NOTE
    assert random_weights_note("real/model", "real/clip") == ""
