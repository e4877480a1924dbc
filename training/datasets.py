"""The dataset index, where it was before it moved to ``core.dataset_index`` (torch-free,
shared by training and export): old imports keep working."""

from microgesture.core.dataset_imigue import detect_coords, read_split_file, restricted_load  # noqa: F401
from microgesture.core.dataset_index import (CHALLENGE_SIZE, ClipRecord, DatasetIndex,  # noqa: F401
                                             canonical_split, detect_kind, open_dataset)
