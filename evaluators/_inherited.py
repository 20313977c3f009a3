"""The subnet a search scores: a supernet's weights, optionally fine-tuned, BatchNorm
recalibrated. Trials and the supernet ranking benchmark score the same model this way."""

from __future__ import annotations

from torch import nn

from evaluators._accuracy import recalibrate_batchnorm
from evaluators._data import DataSplits
from evaluators._train import OptimConfig, cross_entropy_step, train
from search_spaces import Arch, Supernet


def inherited_subnet(
    supernet: Supernet,
    arch: Arch,
    data: DataSplits,
    *,
    batch_size: int,
    recalibration_batches: int,
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """Returns ``arch``'s subnet with weights copied from ``supernet``, trained for
    ``finetune_epochs`` on the training split (cross-entropy, AdamW at ``finetune_lr``; 0:
    none), then its BatchNorm statistics re-estimated on ``recalibration_batches`` training
    batches, in eval mode. The supernet itself is left as it was.

    Raises:
        SearchSpaceError: ``arch`` does not belong to the supernet's space.
        NonFiniteLossError: fine-tuning diverged.
    """
    subnet = supernet.extract(arch)
    if finetune_epochs > 0:
        train(
            subnet,
            lambda epoch: data.loader("train", batch_size, shuffle=True, seed=seed + epoch),
            cross_entropy_step(),
            epochs=finetune_epochs,
            steps_per_epoch=-(-int(data.y_train.numel()) // batch_size),
            optim=OptimConfig(lr=finetune_lr),
        )
    recalibrate_batchnorm(subnet, data.loader("train", batch_size, shuffle=True, seed=seed),
                          recalibration_batches)
    return subnet.eval()
