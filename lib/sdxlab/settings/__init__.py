"""Every setting declared once: each stage's settings dataclass, the common block and the generation settings.

- `base`: `setting()` (default + help + allowed values), `Settings` (checks every field at construction,
  `from_parameters(globals())`), `SettingsError`;
- `common`: `CommonSettings`, the block every notebook starts with;
- `generation`: `GenerationSettings`, how a picture is drawn (sampling, validation, playground, search);
- `stages`: which dataclass declares which notebook's parameters, the runner's checks and the parameters cells.

`python -m sdxlab.settings --write` rewrites the notebooks' parameters cells from the declarations;
`--check` says whether they are current.

To add a notebook parameter: add a field to its stage's dataclass (`cuda_graph: bool = setting(False, "help")`
in `TrainConfig` is `train_cuda_graph`; `like(GenerationSettings, ...)` for a drawing knob), run
`python -m sdxlab.settings --write`, and use it from the settings object in the notebook. To change a default,
change it there; a profile line only says where a profile differs, and why.
"""

from sdxlab.settings.base import Parameter, Settings, SettingsError, internal, like, setting
from sdxlab.settings.common import CommonSettings
from sdxlab.settings.generation import GenerationSettings

__all__ = [
    "CommonSettings",
    "GenerationSettings",
    "Parameter",
    "Settings",
    "SettingsError",
    "internal",
    "like",
    "setting",
]
