"""User-facing errors: the CLI prints these as one clear message, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration; the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """One or more configuration problems, reported together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        text = problems[0] if len(problems) == 1 else "\n".join(f"  - {p}" for p in problems)
        super().__init__(text if len(problems) == 1 else f"{len(problems)} configuration problems:\n{text}")
