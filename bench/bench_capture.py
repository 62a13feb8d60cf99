"""Capture speed: 22 phone photos of 12 megapixels through the whole capture stage, at SDXL's 1024 px.

The photos are the bundled samples (data/sample/) enlarged to 12 MP (their own aspect ratio, e.g.
3000 x 4000 for a 3:4 portrait) and saved as quality-90 JPEGs, six of them mirrored so there are 22 distinct photos. Making them is
not timed. Timed: `capture.analyse_photos` (decode, turn upright, detect and confirm the face, measure,
embed, hash, crop) and `capture.write_dataset` (1024 px PNG crops, masks, metadata, report, contact sheet).

    .venv/bin/python bench/bench_capture.py                    # 22 photos, 12 MP, 1024 px
    .venv/bin/python bench/bench_capture.py --photos 8 --megapixels 24

Prints a table and appends one JSON line (device, date, versions, figures) to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from sdxlab import capture, faces

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results.jsonl"
SAMPLE = BENCH_DIR.parent / "data" / "sample"


def make_photos(folder: Path, count: int, megapixels: float) -> list[Path]:
    """`count` JPEGs of about `megapixels`, from the sample photos (mirrored on the second pass)."""
    sources = sorted(path for path in SAMPLE.iterdir() if path.is_file())
    made = []
    for index in range(count):
        image = capture.load_photo(sources[index % len(sources)]).image
        if index >= len(sources):
            image = ImageOps.mirror(image)
        factor = (megapixels * 1e6 / (image.width * image.height)) ** 0.5  # keep the framing, reach the pixel count
        large = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.BICUBIC)
        path = folder / f"IMG_{index + 1:04d}.jpg"
        large.save(path, "JPEG", quality=90)
        made.append(path)
    return made


class Clock:
    """Wall and process CPU time since the last lap."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        elapsed = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return elapsed


def versions() -> dict[str, str]:
    import dlib
    import imagehash
    import numpy
    import PIL
    import pillow_heif

    import sdxlab

    return {
        "python": platform.python_version(),
        "sdxlab": sdxlab.__version__,
        "dlib": dlib.__version__,
        "pillow": PIL.__version__,
        "pillow_heif": pillow_heif.__version__,
        "numpy": numpy.__version__,
        "imagehash": imagehash.__version__,
    }


def device() -> str:
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=22, help="number of photos (default 22)")
    parser.add_argument("--megapixels", type=float, default=12.0, help="size of each photo (default 12)")
    parser.add_argument("--resolution", type=int, default=1024, help="training resolution (default 1024, SDXL)")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="JSON-lines file to append to")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-capture-") as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        print(f"Making {args.photos} photos of {args.megapixels:g} MP ...", flush=True)
        photos = make_photos(folder, args.photos, args.megapixels)
        megabytes = sum(path.stat().st_size for path in photos) / 1e6
        clock = Clock()
        for name in ("hog", "cnn_detector", "landmarks_68", "identity"):  # once per process, timed apart
            faces.load_model(name)
        load = clock.lap()
        result = capture.analyse_photos(folder, resolution=args.resolution, min_photos=1, progress=False)
        analyse = clock.lap()
        capture.write_dataset(result, Path(scratch) / "dataset", progress=False)
        write = clock.lap()

    total = (load[0] + analyse[0] + write[0], load[1] + analyse[1] + write[1])
    rows = [
        ("load dlib models (once per process)", load),
        ("analyse (decode, faces, checks, crops)", analyse),
        ("write (PNGs, masks, report, sheet)", write),
        ("total", total),
    ]
    print(
        f"\nDevice: {device()}; {args.photos} photos of {args.megapixels:g} MP ({megabytes:.0f} MB of JPEG), "
        f"crops at {args.resolution} px; kept {len(result.kept)}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'step':40s} {'wall s':>8s} {'s/photo':>8s} {'CPU s':>8s}")
    for label, (wall, cpu) in rows:
        print(f"{label:40s} {wall:8.1f} {wall / args.photos:8.2f} {cpu:8.1f}")
    print("(CPU s: this process's CPU time; wall above CPU means other work shared the cores)")
    if len(result.kept) != args.photos:
        print("Note: not every photo was kept:", *result.messages(), sep="\n  ")

    record = {
        "bench": "capture",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device(),
        "versions": versions(),
        "photos": args.photos,
        "megapixels": args.megapixels,
        "resolution": args.resolution,
        "kept": len(result.kept),
        "load_s": round(load[0], 2),
        "analyse_s": round(analyse[0], 2),
        "write_s": round(write[0], 2),
        "total_s": round(total[0], 2),
        "s_per_photo": round(total[0] / args.photos, 3),
        "cpu_s": round(total[1], 2),
        "load_average": round(os.getloadavg()[0], 2),
    }
    with open(args.results, "a", encoding="utf-8") as results:
        results.write(json.dumps(record) + "\n")
    print(f"\nAppended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
