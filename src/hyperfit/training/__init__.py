"""Training: the hyperfitting loop (`hyperfit train`), its engine policy, checkpoints, probes and export.

    loop.py        train(): setup, fit, finish
    engine.py      the Accelerator; one process, DDP, FSDP2, DeepSpeed policy; the batch split over ranks
    budget.py      how long to train (train.epochs or train.updates) and when to probe and save
    checkpoint.py  epoch checkpoints and what --resume reads back
    probe.py       the per-epoch probe (losses, entropy, greedy TTR, examples) and the weight-change share
    export.py      checkpoints/final/, its model card, the hub
    step.py        the loss and its speed levers; optim.py the optimizers
    lora.py        train.method=lora: peft adapters on a frozen base, saved as adapters, merged into final/
"""

from hyperfit.training.engine import check_tracker, local_batch_size
from hyperfit.training.loop import train

__all__ = ["check_tracker", "local_batch_size", "train"]
