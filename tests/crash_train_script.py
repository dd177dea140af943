"""Run by tests/test_crash_safety.py: a tiny training run through the CLI that SIGKILLs itself
at a chosen moment (the kill is injected here, by wrapping the trainer's own methods).

    python crash_train_script.py KILL OUT DATA MODEL [extra rankalign train flags]

KILL: ``none``; ``step:K`` (inside the training step that follows K finished steps, after its
forward pass); ``save:K`` (saving checkpoint-K, after the weights and before the optimizer
state); ``rotate:K`` (deleting an old checkpoint while checkpoint-K is saved); ``final``
(moving the final model into the output folder, after its first file).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(kill: str) -> None:
    from transformers import Trainer

    from rankalign.training import checkpoints, trainer

    what, _, arg = kill.partition(":")
    at = int(arg) if arg else -1
    if what == "step":
        inner = trainer.ListwiseTrainer.compute_loss

        def compute_loss(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            out = inner(self, *args, **kwargs)
            if self.model.training and self.state.global_step == at:
                die()
            return out

        trainer.ListwiseTrainer.compute_loss = compute_loss
    elif what == "save":
        inner_save = Trainer._save_optimizer_and_scheduler

        def save_optimizer(self, output_dir):  # type: ignore[no-untyped-def]
            if self.state.global_step == at:
                die()
            return inner_save(self, output_dir)

        Trainer._save_optimizer_and_scheduler = save_optimizer
    elif what == "rotate":

        def remove(folder):  # type: ignore[no-untyped-def]
            if f"checkpoint-{at}" in os.listdir(Path(folder).parent):
                os.rename(folder, Path(folder).with_name(checkpoints.TRASH + Path(folder).name))
                die()  # renamed away, not yet deleted

        checkpoints.remove = remove
    elif what == "final":
        real_replace = os.replace

        def replace(src, dst):  # type: ignore[no-untyped-def]
            real_replace(src, dst)
            if ".final.tmp" in str(src):
                die()  # one file of the final model moved into place, the others not

        os.replace = replace
    elif what != "none":
        raise SystemExit(f"unknown kill point {kill!r}")


def main() -> int:
    import torch

    torch.set_num_threads(1)
    kill, out, data, model, *extra = sys.argv[1:]
    install(kill)
    from rankalign.cli import main as cli

    return cli(["train", "--method", "dpo_pl", "--data", data, "--output-dir", out, "--model", model,
                "--max-steps", "6", "--save-steps", "2", "--save-total-limit", "2", "--learning-rate", "1e-2",
                "--per-device-train-batch-size", "2", "--use-cpu", "--report-to", "none", "--disable-tqdm", "true",
                "--max-length", "48", "--max-prompt-length", "24", "--seed", "0", "--logging-steps", "1", *extra])


if __name__ == "__main__":
    sys.exit(main())
