"""Training of decoupled and baseline networks, naturally or adversarially.

A :class:`TrainConfig` describes one run; :func:`default_config` fills in the defaults
of a dataset. :func:`train` trains into a checkpoint folder
``<workdir>/models/<dataset>/<config.name>/`` and resumes an interrupted run;
:func:`find_or_train` loads a finished checkpoint or trains it; :func:`load_checkpoint`
loads one folder. Adversarial examples for FGSM and PGD training come from torchattacks.

Example::

    from robustdc.train import default_config, find_or_train

    config = default_config("mnist-sample", "tanhconv")
    model, config, trained = find_or_train(config, "runs")
"""

from robustdc.train.adversarial import adversarial_examples
from robustdc.train.checkpoint import (
    CONFIG_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    CheckpointNotFoundError,
    checkpoint_dir,
    load_checkpoint,
)
from robustdc.train.config import (
    DATASET_DEFAULTS,
    OPTIMIZERS,
    TRAININGS,
    TrainConfig,
    build_model_from_config,
    default_config,
    train_command,
)
from robustdc.train.find import find_or_train
from robustdc.train.loop import TrainResult, evaluate_accuracy, train

__all__ = [
    "CONFIG_FILE",
    "DATASET_DEFAULTS",
    "METRICS_FILE",
    "METRIC_COLUMNS",
    "MODEL_FILE",
    "OPTIMIZERS",
    "STATE_FILE",
    "TRAININGS",
    "CheckpointError",
    "CheckpointNotFoundError",
    "TrainConfig",
    "TrainResult",
    "adversarial_examples",
    "build_model_from_config",
    "checkpoint_dir",
    "default_config",
    "evaluate_accuracy",
    "find_or_train",
    "load_checkpoint",
    "train",
    "train_command",
]
