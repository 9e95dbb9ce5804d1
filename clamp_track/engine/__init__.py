"""Training loop, evaluation (OKS AP, PCK) and few-shot / zero-shot sampling.

The entry points other parts call (CLI, fine-tuning on corrections, GUI workers)::

    from clamp_track.engine import LoopConfig, OptimConfig, fit, evaluate

    result = fit(model, train_set, LoopConfig(epochs=50, batch_size=16), "runs/ft",
                 val_set=val_set, callback=on_progress)   # -> TrainResult (last.pt, best.pt)
    metrics = evaluate(model, val_set).metrics             # AP, AP50, ..., PCK@0.1

``run_training(TrainConfig)`` is the same for a COCO-file run described by a YAML preset
(``run_seeds`` repeats it over seeds and reports mean ± sd), and
``finetune(stores, FinetuneConfig())`` the small-data recipe on a user's corrections.
Names are imported lazily.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fit": "trainer", "LoopConfig": "trainer", "TrainProgress": "trainer",
    "TrainResult": "trainer",
    "OptimConfig": "optim",
    "EvalConfig": "evaluate", "EvalResult": "evaluate", "evaluate": "evaluate",
    "predict": "evaluate", "coco_metrics": "evaluate", "format_metrics": "evaluate",
    "RegimeConfig": "regimes", "fewshot_indices": "regimes",
    "TrainConfig": "experiment", "run_training": "experiment", "run_seeds": "experiment",
    "SeedSummary": "experiment",
    "finetune": "finetune", "FinetuneConfig": "finetune", "FinetuneResult": "finetune",
    "FinetuneProgress": "finetune",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
