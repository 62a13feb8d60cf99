"""Train outside the notebook, e.g. on several GPUs:

    accelerate launch --multi_gpu --num_processes 2 -m sdxlab.train --profile sdxl --run me [-p train_steps=800 ...]
    torchrun --nproc_per_node 2 -m sdxlab.train --profile sdxl -p run=me   # the same without accelerate's launcher
    python -m sdxlab.train --profile demo --run try-train          # one process: CPU or one GPU

The parameters are the notebook's: a profile from env/profiles/ plus `-p key=value` overrides (keys other
stages use are ignored here). It reads outputs/<run>/dataset/ (run 01_capture first) and writes outputs/<run>/lora/.
"""

from __future__ import annotations

import argparse
import sys

from sdxlab.layout import RunLayout
from sdxlab.run import RunError, check_parameters, load_profile, parse_override
from sdxlab.settings import SettingsError
from sdxlab.settings.stages import help_text
from sdxlab.train.config import COMMON_PARAMETERS, TrainConfig, TrainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdxlab.train",
        description="sdxlab: train a DreamBooth LoRA",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=help_text(["02_train"]),
    )
    parser.add_argument("--profile", default="demo", help="parameter profile from env/profiles/ (default: demo)")
    parser.add_argument("--run", help="run folder under outputs/ whose dataset/ to train on (or -p run=NAME)")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter (value read as YAML); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        values = {**load_profile(args.profile), **dict(parse_override(item) for item in args.param)}
        run = args.run or values.get("run")
        if not run:
            raise RunError("Name the run whose dataset/ to train on: --run NAME (or -p run=NAME).")
        wanted = {k: v for k, v in values.items() if k in COMMON_PARAMETERS or k.startswith("train_")}
        checked = check_parameters({**wanted, "run": run, "outputs_dir": values.get("outputs_dir")})
        layout = RunLayout.for_run(checked["run"], checked["outputs_dir"])
        wanted = {k: checked[k] for k in wanted}
        config = TrainConfig.from_notebook_parameters(wanted, dataset_dir=layout.dataset, output_dir=layout.lora)
    except (RunError, SettingsError, TrainError) as error:
        print(f"sdxlab.train: {error}", file=sys.stderr)
        return 1
    from sdxlab.train.loop import TrainingInterrupted, train  # torch, peft, diffusers: once the parameters are good

    try:
        result = train(config)
    except (SettingsError, TrainingInterrupted) as error:
        print(f"sdxlab.train: {error}", file=sys.stderr)
        return 1
    if result is not None:  # the main process
        print(f"LoRA: {result.lora_file}\nkohya/WebUI: {result.kohya_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
