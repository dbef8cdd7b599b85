"""Data sets of `plus`: one record schema (`plus.data.schema`) and deterministic builders.

See `plus.data.schema` for the record fields and `SPLITS`; each builder module documents its construction.
"""

from plus.data.pets import ANIMALS, PETS_PROMPT, animal_of, build_pets, pet_sentences
from plus.data.schema import (
    REQUIRED_FIELDS,
    SPLITS,
    RecordError,
    make_record,
    read_jsonl,
    render_context,
    to_dataset,
    validate_record,
    validate_records,
    write_jsonl,
)

__all__ = [
    "ANIMALS",
    "PETS_PROMPT",
    "REQUIRED_FIELDS",
    "SPLITS",
    "RecordError",
    "animal_of",
    "build_pets",
    "make_record",
    "pet_sentences",
    "read_jsonl",
    "render_context",
    "to_dataset",
    "validate_record",
    "validate_records",
    "write_jsonl",
]
