"""The ``rankalign`` command line: ``rankalign {rank,train,data,eval,demo,...} ...``.

Each sub-command lives in ``rankalign.commands.<name>`` and exposes ``register(subparsers)``.
Heavy libraries are imported inside the commands, so ``rankalign --help`` is instant.
Set ``RANKALIGN_DEBUG=1`` to see full tracebacks of user errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: sub-command modules, in --help order (``train_rm`` is the command ``train-rm``); a listed module
#: that does not exist yet is skipped
COMMANDS = ("data", "rank", "train", "train_rm", "score", "spa", "pro_bootstrap", "eval", "compare", "report", "judge", "study", "demo")


def build_parser() -> argparse.ArgumentParser:
    from rankalign import __version__

    parser = argparse.ArgumentParser(
        prog="rankalign",
        description="List-wise, attribute-aware, self-supervised preference alignment of LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"rankalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"rankalign.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rankalign.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rankalign.commands.threads import quiet_openmp_threads

    quiet_openmp_threads()  # before anything imports torch
    from rankalign.data.record import RecordError
    from rankalign.errors import UserError

    parser = build_parser()
    # commands that take free-form `--key value` overrides set `accepts_extra` (e.g. `train`)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        result = args.func(args)
    except (UserError, RecordError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("RANKALIGN_DEBUG"):
            raise
        print(f"rankalign {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if os.environ.get("RANKALIGN_DEBUG") or not exc.name or exc.name.split(".")[0] == "rankalign":
            raise
        print(f"rankalign {args.command}: error: {_missing_package_hint(exc.name)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rankalign {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _missing_package_hint(module: str) -> str:
    """The install command for a missing ``module``: the extra of rankalign that lists it
    (from the installed package metadata), or the package itself."""
    import re
    from importlib import metadata

    top = module.split(".")[0]
    known = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}
    dist = known.get(top, top).lower().replace("_", "-")
    extra = None
    try:
        for req in metadata.requires("rankalign") or []:
            m = re.match(r"\s*([A-Za-z0-9_.\-]+).*extra\s*==\s*[\"']([^\"']+)[\"']", req)
            if m and m.group(1).lower().replace("_", "-") == dist and m.group(2) not in ("all", "test"):
                extra = m.group(2)
                break
    except metadata.PackageNotFoundError:
        pass
    how = f"pip install 'rankalign[{extra}]'" if extra else f"pip install {dist}"
    return f"this command needs the package {top!r}, which is not installed; install it with: {how}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
