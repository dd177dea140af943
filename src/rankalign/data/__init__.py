"""Data: the list-wise record, its I/O, loaders for public preference sets, StackExchange dumps."""

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
