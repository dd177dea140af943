"""Plug-in packages: importing a package imports every module in it, so each module's
registration decorator (``@register_loss``, ``@register_source``) runs and a new method or
data source is one new file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection, Iterable


def import_modules(package: str, path: Iterable[str], infrastructure: Collection[str]) -> None:
    """Import every module of ``package`` (found on ``path``, its ``__path__``) except the
    ``infrastructure`` ones and private ``_modules``, in name order."""
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda i: i.name):
        if info.name not in infrastructure and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
