"""The loss history: one row per optimizer step, kept in loss.csv and drawn in loss.png beside the checkpoints
(rewritten with every checkpoint and at the end), and read back where a resumed training continues the curve."""

from __future__ import annotations

from pathlib import Path

from sdxlab import files

HISTORY_COLUMNS = ["step", "loss", "lr", "samples_per_s", "elapsed_s"]  # loss.csv, one row per step


def history_row(step: int, loss: float, lr: float, samples_per_s: float, elapsed_s: float) -> dict[str, float]:
    return dict(zip(HISTORY_COLUMNS, (step, loss, lr, samples_per_s, elapsed_s), strict=True))


def read_history(loss_csv: Path, up_to_step: int) -> list[dict[str, float]]:
    """loss.csv's rows up to `up_to_step` (where a resumed training continues the curve)."""
    if not loss_csv.is_file():
        return []
    import pandas as pd

    frame = pd.read_csv(loss_csv)
    return [dict(row) for row in frame[frame["step"] <= up_to_step].to_dict("records")]


def write_loss_files(output_dir: Path, history: list[dict[str, float]]) -> tuple[Path, Path]:
    import pandas as pd

    from sdxlab.plots import close
    from sdxlab.train.plots import loss_curve

    loss_csv = files.write_csv(output_dir / "loss.csv", pd.DataFrame(history, columns=HISTORY_COLUMNS))
    figure = loss_curve(history)
    loss_png = files.save_figure(output_dir / "loss.png", figure)
    close(figure)
    return loss_csv, loss_png
