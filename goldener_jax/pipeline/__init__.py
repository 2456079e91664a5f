"""The core under ``select`` / ``split``: inputs (:mod:`.data`), the method registry with typed
options and the auto rule (:mod:`.methods`), the task plan (:mod:`.engine`) and what survives a
kill (:mod:`.progress`). ``select.py`` and ``split.py`` hold only the public functions."""

from goldener_jax.pipeline.data import (
    Data,
    anchor_samples,
    apply_reduce,
    check_common,
    full_hash,
    key_data,
    load_data,
    parse_reduce,
)
from goldener_jax.pipeline.engine import Outcome, Settings, pack_groups, run_selection, unit_order
from goldener_jax.pipeline.groups import feasible_set_counts, pack_sets
from goldener_jax.pipeline.methods import (
    AUTO,
    METHODS,
    BudgetRule,
    HerdingOptions,
    KMeansMedoidsOptions,
    NoOptions,
    ProbCoverOptions,
    SelectionMethod,
    SuiteRule,
    TypicalKCenterOptions,
    TypiclustOptions,
    ZCoreOptions,
    check_options,
    register_method,
    resolve_method,
)
from goldener_jax.pipeline.progress import Progress, TaskLog, checkpoint_lock
from goldener_jax.pipeline.representative import (
    AutoSplitOptions,
    deal,
    representative_assignment,
)

__all__ = [
    "checkpoint_lock",
    "feasible_set_counts",
    "pack_sets",
    "AUTO",
    "AutoSplitOptions",
    "METHODS",
    "BudgetRule",
    "SuiteRule",
    "Data",
    "HerdingOptions",
    "KMeansMedoidsOptions",
    "NoOptions",
    "Outcome",
    "ProbCoverOptions",
    "Progress",
    "SelectionMethod",
    "Settings",
    "TaskLog",
    "TypicalKCenterOptions",
    "TypiclustOptions",
    "ZCoreOptions",
    "anchor_samples",
    "apply_reduce",
    "check_common",
    "check_options",
    "deal",
    "full_hash",
    "key_data",
    "load_data",
    "pack_groups",
    "parse_reduce",
    "register_method",
    "representative_assignment",
    "resolve_method",
    "run_selection",
    "unit_order",
]
