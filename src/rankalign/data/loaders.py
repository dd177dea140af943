"""The loaders of public preference data sets, under the names earlier code imports.

The sources themselves live in :mod:`rankalign.data.sources`, one module each, registered
by format name; this module re-exports them: :data:`LOADERS` is the live registry
(format name -> callable :class:`~rankalign.data.sources.DataSource`), and
``load_oasst1(path, context="last")`` etc. are the registered sources.
"""

from __future__ import annotations

from rankalign.data.sources import SOURCES as LOADERS
from rankalign.data.sources import Skip, available_formats, iter_rows, load_dataset_file
from rankalign.data.sources.generic import load_generic
from rankalign.data.sources.hh_rlhf import load_hh_rlhf
from rankalign.data.sources.oasst1 import load_oasst1
from rankalign.data.sources.pku_saferlhf import load_pku_saferlhf
from rankalign.data.sources.pro import load_pro
from rankalign.data.sources.stack_exchange_preferences import load_stack_exchange_preferences
from rankalign.data.sources.ultrafeedback import load_ultrafeedback

__all__ = [
    "LOADERS",
    "Skip",
    "available_formats",
    "iter_rows",
    "load_dataset_file",
    "load_generic",
    "load_hh_rlhf",
    "load_oasst1",
    "load_pku_saferlhf",
    "load_pro",
    "load_stack_exchange_preferences",
    "load_ultrafeedback",
]
