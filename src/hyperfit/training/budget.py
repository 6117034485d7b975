"""How long `hyperfit train` trains, and when it probes and saves: in epochs, or in updates under train.updates.

    hyperfit run configs/paper.yaml data.num_train=8 train.updates=5000   # the paper's data-quantity recipe

train.epochs counts passes over the samples, and probes and checkpoints fall on epoch ends (train.probe_every,
train.save_every). train.updates fixes the number of optimizer updates instead, so that runs on 2000 and on 8
samples take the same number of steps: the epochs follow (updates per epoch = samples // global batch), the
last one may be partial, and probes and checkpoints fall on update counts (train.probe_every_updates,
train.save_every_updates). An epoch cadence at 8 samples would probe and save 5,000 times.

    >>> b = Budget(total=10, per_epoch=4, in_updates=True, probe_every=5, save_every=0)
    >>> b.epochs, b.epoch_end(3), b.due(b.probe_every, epoch=2, step=5), b.describe()
    (3, 10, True, '10 updates (train.updates) = 2 epochs + 2 updates')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hyperfit.config import TrainConfig

# Probes of a train.updates run when train.probe_every_updates is unset: enough points for a curve, few
# enough that a 5,000-update run at 8 samples spends its time training (each probe decodes greedily).
DEFAULT_PROBES = 10


@dataclass(frozen=True)
class Budget:
    total: int  # optimizer updates the run trains for
    per_epoch: int  # updates per epoch: samples // global batch
    in_updates: bool  # train.updates is set: the cadences below count updates, not epochs
    probe_every: int  # epochs or updates between probes; 0: no probes
    save_every: int  # epochs or updates between resumable checkpoints; 0: the final weights only

    @classmethod
    def of(cls, cfg: TrainConfig, n_samples: int) -> Budget:
        per_epoch = n_samples // cfg.batch_size
        if cfg.updates is None:
            return cls(per_epoch * cfg.epochs, per_epoch, False, cfg.probe_every, cfg.save_every)
        probe = cfg.probe_every_updates
        if probe is None:  # train.probe_every=0 says "no probes" under either budget
            probe = math.ceil(cfg.updates / DEFAULT_PROBES) if cfg.probe_every else 0
        # No checkpoint unless asked: a sweep's cells keep final/ only (a resumable 1.1B checkpoint is ~13 GB).
        return cls(cfg.updates, per_epoch, True, probe, cfg.save_every_updates or 0)

    @property
    def epochs(self) -> int:
        """Epochs begun, the last one possibly partial."""
        return -(-self.total // self.per_epoch)

    def epoch_end(self, epoch: int) -> int:
        """The update count at which `epoch` (1-based) ends: mid-epoch for a partial last epoch."""
        return min(epoch * self.per_epoch, self.total)

    def due(self, every: int, epoch: int, step: int) -> bool:
        """Whether a probe or checkpoint every `every` (epochs, or updates under train.updates) falls after
        update `step` of `epoch`: at each multiple, and when training ends. Epoch cadences are asked at epoch
        ends only."""
        if not every:
            return False
        return (step if self.in_updates else epoch) % every == 0 or step == self.total

    def describe(self) -> str:
        """The budget as the banner, summary and model card state it."""
        if not self.in_updates:
            return f"{self.per_epoch} updates/epoch × {self.epochs} epochs = {self.total} updates"
        full, rest = divmod(self.total, self.per_epoch)
        return f"{self.total} updates (train.updates) = {full} epochs" + (f" + {rest} updates" if rest else "")

    def cadence(self) -> str:
        """When probes and checkpoints fall, for the banner."""
        unit = "updates" if self.in_updates else "epochs"
        probes = f"probes every {self.probe_every} {unit}" if self.probe_every else "no probes"
        saves = f"checkpoint every {self.save_every} {unit}" if self.save_every else "final weights only"
        return f"{probes}, {saves}"
