"""lm-evaluation-harness integration: the `fsgen` and `fsgen-replay` models, task overrides,
local code execution scoring, and the decode / score runners.

Importing this package registers the two models with lm-eval, lazily (lm-eval's placeholder
registration: the classes, and torch with them, load on first use), so the workflow can import
`fsgen.harness.tasks` at DAG build for free. `lm_eval.models` is imported first: it registers
lm-eval's built-in models, which registering ours first would hide.
"""

import lm_eval.models  # noqa: F401  (built-in models first, see above)
from lm_eval.api.registry import model_registry

from fsgen.harness.tasks import (
    TASKS_DIR,
    CodeExecutionNotAllowed,
    TaskNotFound,
    make_task_manager,
    select_samples,
    task_name,
    write_task_overrides,
)

MODELS = {"fsgen": "fsgen.harness.lm:FsgenLM", "fsgen-replay": "fsgen.harness.replay:ReplayLM"}
for _name, _target in MODELS.items():
    model_registry.register(_name, target=_target)

_LAZY = {"FsgenLM": "fsgen.harness.lm", "ReplayLM": "fsgen.harness.replay"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fsgen.harness' has no attribute {name!r}")


__all__ = [
    "FsgenLM",
    "ReplayLM",
    "TASKS_DIR",
    "CodeExecutionNotAllowed",
    "TaskNotFound",
    "make_task_manager",
    "select_samples",
    "task_name",
    "write_task_overrides",
]
