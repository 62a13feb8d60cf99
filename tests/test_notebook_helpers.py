"""The library calls that replaced logic in notebook cells: 01's mask previews, 02's table of written files and
03's note on why nothing was drawn over training."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from PIL import Image

from sdxlab import capture, files, sample


def test_masked_previews_show_each_crop_through_its_mask(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rows = []
    for index, background in enumerate((77, 0), start=1):
        name = f"{index:04d}.png"
        Image.new("RGB", (16, 16), (200, 100, 50)).save(tmp_path / "images" / name)
        mask = np.full((16, 16), background, np.uint8)
        mask[4:12, 4:12] = 255  # the face
        Image.fromarray(mask, "L").save(tmp_path / "masks" / name)
        rows.append({"file_name": f"images/{name}", "mask_file": f"masks/{name}", "text": f"caption {index}"})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    previews, captions = capture.masked_previews(tmp_path)
    assert captions == ["caption 1", "caption 2"]
    first, second = (np.asarray(preview) for preview in previews)
    assert first[8, 8].tolist() == [200, 100, 50] == second[8, 8].tolist()  # the face at full weight
    assert first[0, 0].tolist() == [round(200 * 77 / 255), round(100 * 77 / 255), round(50 * 77 / 255)]  # dimmed
    assert second[0, 0].tolist() == [0, 0, 0]  # weight 0: the pixel does not count
    assert len(capture.masked_previews(tmp_path, limit=1)[0]) == 1


def test_file_sizes_lists_files_and_folders_relative_to_the_run(tmp_path):
    (tmp_path / "lora" / "checkpoints" / "step_000010").mkdir(parents=True)
    (tmp_path / "lora" / "a.safetensors").write_bytes(b"x" * 2048)
    (tmp_path / "lora" / "checkpoints" / "step_000010" / "one").write_bytes(b"x" * 1024)
    (tmp_path / "lora" / "checkpoints" / "step_000010" / "two").write_bytes(b"x" * 512)
    table = files.file_sizes(
        [tmp_path / "lora" / "a.safetensors", None, tmp_path / "lora" / "checkpoints" / "step_000010"], tmp_path
    )
    assert table.to_dict("records") == [
        {"file": "lora/a.safetensors", "kB": 2.0},
        {"file": "lora/checkpoints/step_000010", "kB": 1.5},
    ]


def test_why_nothing_was_drawn_over_training():
    with_lora, without = SimpleNamespace(lora=object()), SimpleNamespace(lora=None)
    assert sample.why_no_checkpoint_samples(without, None, "all") == "no LoRA is loaded"
    assert (
        sample.why_no_checkpoint_samples(with_lora, "other.safetensors", "all")
        == "sample_lora_file replaces the run's LoRA"
    )
    assert sample.why_no_checkpoint_samples(with_lora, None, "all") == "the run has no training checkpoints"
    assert sample.why_no_checkpoint_samples(with_lora, None, []) == "sample_checkpoints is empty"
