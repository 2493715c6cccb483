"""lm-evaluation-harness integration: the `fsgen` and `fsgen-replay` models, task overrides,
local code execution scoring, and the decode / score runners.

Importing this package registers the two models with lm-eval. `lm_eval.models` is imported
first: it registers lm-eval's built-in models, which registering ours first would hide.
"""

import lm_eval.models  # noqa: F401  (built-in models first, see above)

from fsgen.harness.lm import FsgenLM
from fsgen.harness.replay import ReplayLM
from fsgen.harness.tasks import (
    CodeExecutionNotAllowed,
    TaskNotFound,
    make_task_manager,
    select_samples,
    task_name,
    write_task_overrides,
)

__all__ = [
    "FsgenLM",
    "ReplayLM",
    "CodeExecutionNotAllowed",
    "TaskNotFound",
    "make_task_manager",
    "select_samples",
    "task_name",
    "write_task_overrides",
]
