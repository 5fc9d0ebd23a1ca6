"""The main job: Safety Self-Play end to end on the synthetic safety world.

    python train.py                                   # CPU preset, about 4 minutes on 2 cores
    python train.py preset=gpu                        # the single-GPU preset
    python train.py selfplay.iterations=40 out_dir=runs/quick
    python train.py stage=sft                         # only the supervised model
    torchrun --standalone --nproc_per_node=2 train.py # self-play data-parallel over 2 processes

1. the supervised stage trains a tokenizer and a GPT from scratch on the
   world's corpora (cached under runs/cache/, reused when the config matches);
2. self-play trains the attacker and defender roles of that one model with
   PPO and UCB experience replay;
3. both models are evaluated on held-out intents and a before/after table is
   printed and written to out_dir/results.md.

Every key of minissp/config.py can be set as key=value.

Self-play checkpoints to out_dir/checkpoint.pt; the same command run again
resumes from it (resume=false starts over). See the README, "Reliability".
Under torchrun, each process plays its share of the games (minissp/distributed.py).
"""

import os
import sys

from minissp.checkpoint import CheckpointError
from minissp.config import ConfigError, build_config
from minissp.pipeline import RunStopped, run


def main(argv: list[str]) -> int:
    """Exit 0 on success; on bad input or a non-finite number, one line on stderr and exit 2.

    Bad input is a config key or value (refused before anything runs), a file that is
    not a checkpoint (a resumed run's out_dir/checkpoint.pt, a cached supervised model),
    or a directory that cannot be written (OSError, with the path it names)."""
    try:
        run(build_config(argv))
    except (ConfigError, CheckpointError, RunStopped, OSError) as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike; rank 0 says why
            print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
