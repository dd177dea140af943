"""Run by tests/test_crash_outputs.py: a ``rankalign`` command that SIGKILLs itself just before
its N-th rename of a finished file into place (every output is written to a temporary name
and renamed, so this is the last moment before an output appears).

    python crash_cli_script.py N rankalign-arguments...
    python crash_cli_script.py to:NAME rankalign-arguments...

N = 0 runs the command without a kill; ``to:NAME`` kills before the first rename onto a file
named NAME.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    n, *argv = sys.argv[1:]
    target = n[3:] if n.startswith("to:") else None
    at = -1 if target else int(n)
    real_replace, real_rename = os.replace, os.rename
    calls = {"n": 0}

    def killing(real):  # type: ignore[no-untyped-def]
        def move(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == at or (target and os.path.basename(str(dst)) == target):
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)

        return move

    if at or target:
        os.replace, os.rename = killing(real_replace), killing(real_rename)
    from rankalign.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
