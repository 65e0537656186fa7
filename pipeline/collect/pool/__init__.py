"""Step 1 of collection: the candidate pool of (image URL, text) pairs.

`build_pool` (in `stage.py`, whose docstring states the whole contract: inputs, output,
per-row rules, dedup, how it scales and resumes) runs three phases of part tasks:

* `readers.py`: the input formats (parquet, csv, tsv, jsonl, WAT), read as batches;
* `filters.py`: phase 1, the per-row rules and the spill of one input's kept rows;
* `dedup.py`: phase 2, the cross-input uid dedup over hash buckets (and its key files);
* `writer.py`: phase 3, one input's rows minus its duplicates into its part files.
"""

from .dedup import FINE_BUCKETS
from .filters import DROP_KEYS
from .readers import input_format
from .stage import build_pool

__all__ = ["DROP_KEYS", "FINE_BUCKETS", "build_pool", "input_format"]
