"""Data: the list-wise record, its I/O, the sources of public preference sets, StackExchange dumps.

The sources (``oasst1``, ``hh_rlhf``, ...) are registered in :mod:`rankalign.data.sources`;
importing that package registers every built-in one.
"""

from rankalign.data.io import LoadReport, dataset_to_records, read_records, records_to_dataset, write_records
from rankalign.data.record import ListRecord, RecordError, Response, pairwise_to_list

__all__ = [
    "ListRecord",
    "LoadReport",
    "RecordError",
    "Response",
    "dataset_to_records",
    "pairwise_to_list",
    "read_records",
    "records_to_dataset",
    "write_records",
]
