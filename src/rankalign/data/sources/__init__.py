"""Data sources: public preference data sets -> list-wise records, registered by format name.

>>> from rankalign.data.sources import get_source, load_dataset_file
>>> records = load_dataset_file("oasst1", "trees.jsonl", context="last")

Each source is one module of this package: a loader function and an options dataclass,
registered with :func:`register_source`. Importing the package imports (and so
registers) every module in it, so a new source is one new module (or, outside the
package, one decorated definition) and nothing else. ``rankalign data formats`` lists the
sources and their options; ``rankalign data convert`` reads their options as flags.
"""

from rankalign.data.sources.base import (
    Collector,
    Skip,
    Source,
    convert_rows,
    file_stem,
    get_field,
    iter_rows,
    require_distinct,
    row_number,
    to_number,
)
from rankalign.data.sources.registry import (
    SOURCES,
    DataSource,
    NoOptions,
    available_formats,
    available_sources,
    get_source,
    load_dataset_file,
    option_choices,
    register_source,
    unregister_source,
)
from rankalign.plugins import import_modules

import_modules(__name__, __path__, {"base", "registry"})  # registers every source module

__all__ = [
    "SOURCES",
    "Collector",
    "DataSource",
    "NoOptions",
    "Skip",
    "Source",
    "available_formats",
    "available_sources",
    "convert_rows",
    "file_stem",
    "get_field",
    "get_source",
    "iter_rows",
    "load_dataset_file",
    "option_choices",
    "register_source",
    "require_distinct",
    "row_number",
    "to_number",
    "unregister_source",
]
