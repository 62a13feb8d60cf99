"""The LoRA trainer (02_train): caches, training step, checkpoints and resume, export.

    from sdxlab.train import TrainConfig, train
    result = train(TrainConfig(dataset_dir=..., output_dir=..., model="tiny", resolution=128, steps=40))

One module per concept: `config` (every parameter, validation), `data` (the dataset folder), `cache`
(latents and caption embeddings computed once), `conditioning` (text and SDXL micro-conditioning), `lora`
and `pivotal` (what trains), `step` (the loss), `graphed` (the step replayed from a CUDA graph), `optim`
(optimiser, schedule, loss scaler), `memory` (auto batch size, out-of-memory advice), `parallel` (one
process per GPU), `checkpoint`, `history` (loss.csv), `validation`, `prior` (class images), `loop` (`train`,
top to bottom), `plots` (loss curve, validation grid), `live` (the notebook's updating figures), `export`
(diffusers and kohya files) and `publish` (lora.unfinished/ becomes lora/).
"""

from sdxlab.lazy import lazy_exports

# name -> module it lives in; imported on first use (sdxlab.lazy says why)
_EXPORTS = {
    "TrainConfig": "config",
    "TrainError": "config",
    "TrainEvent": "loop",
    "TrainResult": "loop",
    "TrainingInterrupted": "loop",
    "train": "loop",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
