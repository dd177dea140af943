"""``rankalign train``: fine-tune a causal LM with a list-wise method.

::

    rankalign train --method NAME --data FILE --output-dir DIR [--config run.yaml]
        [--model NAME_OR_PATH] [--key value | --key=value | --flag ...]

Every field of :class:`rankalign.training.config.ListwiseConfig` (list-wise fields and all
of ``transformers.TrainingArguments``) and every hyper-parameter of every registered method
is a flag; ``rankalign train --help`` lists them, grouped, with defaults and help texts
read from the dataclasses. Flags win over the YAML file; unknown keys are an error listing
close matches and the valid ones. Multi-process: ``accelerate launch [--config_file
configs/ddp.yaml] -m rankalign train ...`` or ``torchrun --nproc_per_node N -m rankalign train ...``.

The full parser imports ``transformers`` (for ``TrainingArguments``), so it is built only
when ``train`` runs or its help is asked for: ``rankalign --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

_DESCRIPTION = ("Fine-tune a causal LM on list-wise records with a registered method. Every option below "
                "can also be set in a YAML file given by --config; flags win over the file. Keys may use "
                "'-' or '_'. Method hyper-parameters are flat keys (--beta 0.2) and only the chosen method's "
                "may be given.")


class FullHelp(argparse.Action):
    """``-h``: print the help of the full, generated parser (built on demand by ``build(prog=...)``,
    default :func:`build_train_parser`)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, build: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)
        self.build = build or build_train_parser

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: Any = None) -> None:
        self.build(prog=parser.prog).print_help()
        parser.exit()


def register(subparsers: Any) -> None:
    """Add the ``train`` parser; its options are parsed in :func:`run` by the full parser."""
    parser = subparsers.add_parser(
        "train", add_help=False, allow_abbrev=False,
        help="fine-tune a model with a list-wise method (SeAdpra, PRO, DPO-PL, ...)", description=_DESCRIPTION,
    )
    parser.add_argument("-h", "--help", action=FullHelp, help="show every option, grouped, and exit")
    parser.set_defaults(func=run, accepts_extra=True)


def build_train_parser(prog: str = "rankalign train") -> argparse.ArgumentParser:
    """The full ``train`` parser, generated from :class:`ListwiseConfig` and the loss registry.

    Groups: run, model, data (the list-wise fields), one group per set of method
    hyper-parameters (titled with the methods that take them), then ``TrainingArguments``.
    """
    from rankalign.training.config import GROUPS, ListwiseConfig

    return build_config_parser(
        ListwiseConfig, GROUPS, prog=prog, description=_DESCRIPTION, hyperparameters=True,
        usage="%(prog)s --method NAME --data FILE --output-dir DIR [--config RUN.yaml] [--KEY VALUE ...]")


def build_config_parser(cls: type, groups: dict[str, str], *, prog: str, description: str, usage: str,
                        hyperparameters: bool = False) -> argparse.ArgumentParser:
    """A parser generated from a training config dataclass (``ListwiseConfig``, ``RewardConfig``).

    Args:
        cls: the dataclass; its fields' ``metadata["group"]`` names the ``--help`` group.
        groups: group name -> title, in ``--help`` order; fields of other groups (those of
            ``TrainingArguments``) go into a last group.
        hyperparameters: add one group per set of registered method hyper-parameters.
    """
    from rankalign.cli_fields import add_dataclass_fields, type_hints
    from rankalign.losses import hyperparameters as registered
    from rankalign.training.config import config_fields

    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False, usage=usage)
    types = type_hints(cls)
    fields = list(config_fields(cls).values())
    made = {name: parser.add_argument_group(f"{name}: {title}") for name, title in groups.items()}
    made["run"].add_argument("--config", dest="config_file", default=None, metavar="RUN.yaml",
                             help="YAML file of options (any key below); flags win over it")
    for name, group in made.items():
        add_dataclass_fields(group, [f for f in fields if f.metadata.get("group") == name], types=types)
    by_owner: dict[type, list[Any]] = {}
    for hp in (registered().values() if hyperparameters else ()):
        by_owner.setdefault(hp.owner, []).append(hp)
    for owner, hps in by_owner.items():
        title = f"method hyper-parameters of {', '.join(hps[0].methods)}"
        doc = (owner.__doc__ or "").strip().split("\n")[0].replace("``", "")
        add_dataclass_fields(parser.add_argument_group(title, doc),
                             [hp.field for hp in hps], types={hp.name: hp.annotation for hp in hps})
    add_dataclass_fields(
        parser.add_argument_group("training: transformers.TrainingArguments (optimiser, schedule, saving, logging, "
                                  "distributed)"),
        [f for f in fields if f.metadata.get("group") not in made], types=types)
    return parser


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """``['--lr', '1e-4', '--use-lora', '--x=y']`` -> ``{'lr': '1e-4', 'use_lora': 'true', 'x': 'y'}``.

    Reads the arguments the generated parser did not know, so that an unknown key gets
    :func:`~rankalign.training.config.load_config`'s message (close matches, valid keys).

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


def parse_train_args(argv: list[str], parser: argparse.ArgumentParser | None = None
                     ) -> tuple[str | None, dict[str, Any]]:
    """``(config file, overrides)`` from the arguments after ``rankalign train`` (or another
    command whose ``parser`` came from :func:`build_config_parser`)."""
    from rankalign.cli_fields import given_values

    parser = parser or build_train_parser()
    known, unknown = parser.parse_known_args(argv)
    names = [a.dest for a in parser._actions if a.dest not in ("help", "config_file")]
    overrides: dict[str, Any] = parse_overrides(unknown)
    overrides.update(given_values(known, names))
    return known.config_file, overrides


def print_final_loss(result: Any) -> None:
    """``final loss L after N step(s), T s`` from a training result's log (nothing when it logged no step)."""
    last = [r for r in result.log if r.get("type") == "train"]
    if last:
        print(f"final loss {last[-1].get('loss')} after {last[-1].get('step')} step(s), "
              f"{result.train_runtime_s:.1f} s")


def run(args: argparse.Namespace) -> int:
    from rankalign.training.config import load_config
    from rankalign.training.trainer import TRAIN_LOG, train

    config_file, overrides = parse_train_args(list(getattr(args, "extra", []) or []))
    config = load_config(config_file, overrides)
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print_final_loss(result)
        kind = "adapter" if config.use_lora and not config.merge_lora else "model"
        print(f"{kind} written to {result.output_dir}")
        print(f"per-step log written to {os.path.join(result.output_dir, TRAIN_LOG)}")
    sys.stdout.flush()
    return 0
