"""Run by tests/test_training_ddp.py, under torchrun (2 processes) or plain python (1 process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    import torch

    from rankalign.data.record import ListRecord
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import train
    from training_tiny import tiny_records

    torch.set_num_threads(1)
    base, out, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ref_dir = sys.argv[4] if len(sys.argv) > 4 else None  # a shared reference log-prob cache folder
    config = ListwiseConfig(method="dpo_pl", model=base, output_dir=out, use_cpu=True, ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
                            per_device_train_batch_size=per_device, max_steps=3, learning_rate=1e-2,
                            train_sampling_strategy="sequential", save_strategy="no", report_to="none",
                            disable_tqdm=True, max_length=48, max_prompt_length=24, seed=0,
                            ref_logps_dir=ref_dir)
    train(config, [ListRecord.from_dict(d) for d in tiny_records(6)])


if __name__ == "__main__":
    main()
