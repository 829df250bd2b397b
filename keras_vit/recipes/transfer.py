"""The transfer experiment: pretrain, linear probe, fine-tune with layer decay vs from scratch.

On the offline digits: a ViT is pretrained on some classes (all their
training images), then adapted to the other classes from a few images per
class: a linear probe (frozen backbone, new head), then full fine-tuning with
layer-wise learning-rate decay. The same model trained from scratch on the
same few images for the same number of epochs is the baseline. Test accuracy
is measured on the held-out images of the target classes.
"""

from __future__ import annotations

import dataclasses
import os

from keras_vit.recipes.runner import run


@dataclasses.dataclass
class TransferResult:
    pretrain_accuracy: float
    probe_accuracy: float
    finetune_accuracy: float
    scratch_accuracy: float
    run_dirs: dict


def transfer_experiment(
    root: str,
    *,
    source_classes=(0, 1, 2, 3, 4),
    target_classes=(5, 6, 7, 8, 9),
    per_class: int = 10,
    pretrain_epochs: int = 15,
    probe_epochs: int = 10,
    finetune_epochs: int = 20,
    layer_decay: float = 0.75,
    batch_size: int = 16,
    seed: int = 0,
    **common,
) -> TransferResult:
    """Runs the four stages under `root` and returns their test accuracies.

    Args:
        root: folder for the four run folders.
        source_classes: digits to pretrain on.
        target_classes: digits to adapt to.
        per_class: training images per target class.
        pretrain_epochs, probe_epochs, finetune_epochs: epochs per stage; the
            scratch baseline trains `probe_epochs + finetune_epochs` epochs.
        layer_decay: layer-wise learning-rate decay of fine-tuning.
        batch_size: batch of the target stages (the pretraining uses the recipe's).
        seed: seed of every stage (and of which images are kept).
        **common: recipe overrides for every stage (e.g. `verbose=0`).
    """
    target = dict(dataset="digits", model="vit_digits_patch2_8", image_size=None, crop="resize", hflip=False,
                  classes=tuple(target_classes), train_per_class=per_class, batch_size=batch_size, seed=seed,
                  **common)
    dirs = {name: os.path.join(root, name) for name in ("pretrain", "probe", "finetune", "scratch")}
    pretrain = run("digits_vit", classes=tuple(source_classes), epochs=pretrain_epochs, seed=seed,
                   run_dir=dirs["pretrain"], **common)
    probe = run("linear_probe", init_from=os.path.join(dirs["pretrain"], "model.keras"), epochs=probe_epochs,
                optimizer="sgd", lr=0.05, base_batch_size=None, run_dir=dirs["probe"], **target)
    finetune = run("vit_finetune", init_from=os.path.join(dirs["probe"], "model.keras"), epochs=finetune_epochs,
                   optimizer="sgd", lr=0.01, layer_decay=layer_decay, warmup_epochs=1, run_dir=dirs["finetune"],
                   **target)
    scratch = run("digits_vit", epochs=probe_epochs + finetune_epochs, run_dir=dirs["scratch"], **target)
    return TransferResult(pretrain.metrics["test_accuracy"], probe.metrics["test_accuracy"],
                          finetune.metrics["test_accuracy"], scratch.metrics["test_accuracy"], dirs)
