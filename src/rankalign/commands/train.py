"""``rankalign train``: fine-tune a causal LM with a list-wise method.

::

    rankalign train --method NAME --data FILE --output-dir DIR [--config run.yaml]
        [--model NAME_OR_PATH] [--key value | --key=value | --flag ...]

Any field of :class:`rankalign.training.config.ListwiseConfig` can be given as
``--key value`` (``-`` or ``_`` in the key); flags win over the YAML file; unknown keys are
an error listing the valid ones. Multi-process: ``accelerate launch [--config_file
configs/ddp.yaml] -m rankalign train ...`` or ``torchrun --nproc_per_node N -m rankalign train ...``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

#: the flags declared explicitly (shown in --help); every other field is a free --key value
_DECLARED = ("method", "data", "output_dir", "model")


def register(subparsers: Any) -> None:
    """Add the ``train`` parser; it accepts any ``--key value`` config override (see ``args.extra``)."""
    parser = subparsers.add_parser(
        "train", allow_abbrev=False, help="fine-tune a model with a list-wise method (SeAdpra, PRO, DPO-PL, ...)",
        description="Fine-tune a causal LM on list-wise records. Besides the flags below, any config field "
                    "works as --key value (see docs/training.md); flags override --config.",
    )
    parser.add_argument("--config", dest="config_file", default=None, metavar="RUN.yaml",
                        help="YAML file of config fields")
    helps = {
        "method": "training method (a registered loss: dpo_pl, seadpra, pro, ...)",
        "data": "training records (.jsonl, .parquet or a datasets folder)",
        "output_dir": "folder for checkpoints, the final model and train_log.jsonl",
        "model": "policy model folder or hub name (default: offline SmolLM2-135M-Instruct)",
    }
    for name in _DECLARED:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=helps[name])
    parser.set_defaults(func=run, accepts_extra=True)


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """``['--lr', '1e-4', '--use-lora', '--x=y']`` -> ``{'lr': '1e-4', 'use_lora': 'true', 'x': 'y'}``.

    Raises:
        UserError: a value without a ``--key`` before it.
    """
    from rankalign.errors import UserError

    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise UserError(f"unexpected argument {tok!r}; config overrides are written --key value")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(extra) and not (extra[i + 1].startswith("--") and len(extra[i + 1]) > 2):
            value = extra[i + 1]
            i += 2
        else:  # a bare flag: a boolean switched on
            value = "true"
            i += 1
        out[key.replace("-", "_")] = value
    return out


def run(args: argparse.Namespace) -> int:
    from rankalign.training.config import load_config
    from rankalign.training.trainer import TRAIN_LOG, train

    overrides: dict[str, Any] = parse_overrides(list(getattr(args, "extra", []) or []))
    for name in _DECLARED:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    config = load_config(args.config_file, overrides)
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        last = [r for r in result.log if r.get("type") == "train"]
        if last:
            print(f"final loss {last[-1].get('loss')} after {last[-1].get('step')} step(s), "
                  f"{result.train_runtime_s:.1f} s")
        kind = "adapter" if config.use_lora and not config.merge_lora else "model"
        print(f"{kind} written to {result.output_dir}")
        print(f"per-step log written to {os.path.join(result.output_dir, TRAIN_LOG)}")
    return 0
