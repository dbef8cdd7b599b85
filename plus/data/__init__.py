"""Data sets of `plus`: one record schema (`plus.data.schema`) and deterministic builders.

See `plus.data.schema` for the record fields and `SPLITS`; each builder module documents its construction:
`plus.data.pets` (Pets, Pets-OOD), `plus.data.attributes` (UF-P-like synthetic users, PReF's Attributes and
Archetypes populations, the response bank with ground-truth rewards), `plus.data.ultrafeedback` (UF-P-2/4),
`plus.data.prism` (PRISM) and `plus.data.flexible` (unlabelled conversations and user guides as contexts).
"""

from plus.data.attributes import (
    ARCHETYPES,
    ATTRIBUTES,
    POLES,
    Response,
    ResponseBank,
    archetype_users,
    build_attribute_users,
    build_pref_archetypes,
    build_pref_attributes,
    build_response_bank,
    ground_truth_reward,
    label_matrix,
    pole_profile,
    pref_users,
    user_ground_truth,
)
from plus.data.flexible import FLEXIBLE_KINDS, build_flexible_contexts
from plus.data.pets import ANIMALS, PETS_PROMPT, animal_of, build_pets, pet_sentences
from plus.data.prism import PRISM_HUB, build_prism
from plus.data.registry import DATASETS, PREF_POPULATIONS, build_dataset, profile_sizes
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
from plus.data.stats import compact_summary, context_token_lengths, format_record, record_cards, summarize_splits
from plus.data.ultrafeedback import UF_DIMENSIONS, UF_PREFERENCES_HUB, UF_RATINGS_HUB, build_ultrafeedback, load_table

__all__ = [
    "ANIMALS",
    "ARCHETYPES",
    "ATTRIBUTES",
    "DATASETS",
    "PREF_POPULATIONS",
    "PETS_PROMPT",
    "POLES",
    "REQUIRED_FIELDS",
    "SPLITS",
    "RecordError",
    "Response",
    "ResponseBank",
    "PRISM_HUB",
    "UF_DIMENSIONS",
    "UF_PREFERENCES_HUB",
    "UF_RATINGS_HUB",
    "FLEXIBLE_KINDS",
    "animal_of",
    "build_flexible_contexts",
    "build_prism",
    "build_ultrafeedback",
    "load_table",
    "build_attribute_users",
    "build_dataset",
    "build_pets",
    "archetype_users",
    "build_pref_archetypes",
    "build_pref_attributes",
    "build_response_bank",
    "context_token_lengths",
    "format_record",
    "profile_sizes",
    "summarize_splits",
    "compact_summary",
    "record_cards",
    "ground_truth_reward",
    "label_matrix",
    "make_record",
    "pet_sentences",
    "pole_profile",
    "pref_users",
    "read_jsonl",
    "render_context",
    "to_dataset",
    "user_ground_truth",
    "validate_record",
    "validate_records",
    "write_jsonl",
]
