"""`python tests/engine_on_cpu.py ARGS` runs `hyperfit ARGS` with accelerate's FSDP or DeepSpeed engine
switched on in CPU processes (gloo), so that CI exercises the sharded code paths: wrapping, the sharded
save_state / load_state, the consolidated export and --resume.

accelerate picks these engines only on accelerators: AcceleratorState's FSDP/DeepSpeed branch skips
DistributedType.MULTI_CPU, although torch's FSDP2 and DeepSpeed's CPU accelerator both run over gloo.
This module makes the assignment that branch would have made (engine type, plugin, mixed precision) and
changes nothing else. Launch it like the real thing:

    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2 tests/engine_on_cpu.py train RUN
"""

import os
import sys

os.environ["ACCELERATE_USE_CPU"] = "true"  # the shipped configs say use_cpu: false

from accelerate.state import AcceleratorState  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402

_accelerator_state_init = AcceleratorState.__init__
_chosen: dict = {}  # AcceleratorState is re-initialised from shared state later; keep the choice


def _init_with_engine(self, *args, **kwargs):
    _accelerator_state_init(self, *args, **kwargs)
    if self.distributed_type != DistributedType.MULTI_CPU:
        return
    fsdp = kwargs.get("fsdp_plugin") or _chosen.get("fsdp")
    deepspeed = kwargs.get("deepspeed_plugin") or _chosen.get("deepspeed")
    first = not _chosen
    if fsdp is not None:
        self.distributed_type = DistributedType.FSDP
        if first and self._mixed_precision != "no":
            fsdp.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = _chosen["fsdp"] = fsdp
    elif deepspeed is not None:
        self.distributed_type = DistributedType.DEEPSPEED
        if first:
            deepspeed.set_mixed_precision(self._mixed_precision)
            deepspeed.select(_from_accelerator_state=True)
        self.deepspeed_plugins = _chosen["deepspeed"] = deepspeed


AcceleratorState.__init__ = _init_with_engine

if __name__ == "__main__":
    from hyperfit.cli import main

    sys.exit(main())
