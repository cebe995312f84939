"""Data loading: raw records (LLaVA JSON, Hugging Face datasets) to validated `Record`s for training and evaluation.

Every source is normalised to one format, a `Record` (an id, its images, transformers-style chat messages with an
`{"type": "image"}` part per image, the source it came from, and any extra keys in `meta`), and each record is
validated before use. Bad records stop the load with an error naming the record, the file and the problem, or, with
on_bad_record="skip", are listed in `LoadedData.skipped` and skipped_records.json. (Task data
generators live in `llava_swap.tasks`.)
"""

from .llava_json import load_hf_dataset, load_llava_json, write_llava_json
from .records import BadRecordError, LoadedData, Record, SkippedRecord, validate_record

__all__ = [
    "BadRecordError",
    "LoadedData",
    "Record",
    "SkippedRecord",
    "load_hf_dataset",
    "load_llava_json",
    "validate_record",
    "write_llava_json",
]
