"""Rule scripts (scripts/*.py): their log file, and running one inside the Snakemake process.

A `script:` job starts a new Python process that spends 4-6 s importing torch, transformers and
lm-eval before 1-3 s of work. The demo has 40 score and 40 job_stats jobs, so those rules use
`run:` with `run_script`, which executes the same script file in Snakemake's own process (imports
paid once) with the same `snakemake` object a `script:` job gets. On a cluster a non-local rule's
`run:` block executes in the job's own Snakemake process on the node, as before.

Scripts log with `log_to(snakemake.log[0])` (or start with `rule_script`) in both cases. In-process jobs run in Snakemake's job
threads, so a job's file handler only takes records from that job's thread, and `run_script`
removes it when the job ends.
"""

from __future__ import annotations

import logging
import runpy
import threading
from pathlib import Path

FORMAT = "%(asctime)s %(name)s %(message)s"

# One in-process job at a time: lm-eval, `datasets` and the code-execution switch keep global state
# (seeds, environment variables), and the GIL would serialise the jobs anyway.
_IN_PROCESS = threading.Lock()
_handlers = threading.local()


def log_to(path, fmt: str = FORMAT, level: int = logging.INFO) -> logging.Handler:
    """Send this thread's log records (`level` and up, any logger) to `path`, the rule's log file."""
    thread = threading.get_ident()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(fmt))
    handler.setLevel(level)
    # Only this job's thread, and not Snakemake's own messages (it logs from job threads too).
    handler.addFilter(lambda record: record.thread == thread and not record.name.startswith("snakemake"))
    root = logging.getLogger()
    if root.getEffectiveLevel() > level:
        root.setLevel(level)
    root.addHandler(handler)
    _open_handlers().append(handler)
    return handler


def rule_script(name: str, script_globals: dict):
    """(the `snakemake` object Snakemake gave the script, the logger `name` writing to its log[0]):
    the first line of a rule script, `snakemake, log = rule_script("aggregate", globals())`."""
    snakemake = script_globals["snakemake"]
    log_to(snakemake.log[0])
    return snakemake, logging.getLogger(name)


def _open_handlers() -> list[logging.Handler]:
    if not hasattr(_handlers, "open"):
        _handlers.open = []
    return _handlers.open


def _close_handlers(keep: int = 0) -> None:
    """Detach and close this thread's handlers from `log_to`, all but the first `keep`."""
    root = logging.getLogger()
    handlers = _open_handlers()
    for handler in handlers[keep:]:
        root.removeHandler(handler)
        handler.close()
    del handlers[keep:]


def run_script(path, snakemake) -> None:
    """Execute the rule script `path` in this process with `snakemake` (a
    snakemake.script.Snakemake, as `script:` injects) as its global.

    A failure is logged to the job's log (when the script opened one) and re-raised, so Snakemake
    fails the job and deletes its outputs; a script's `sys.exit(message)` becomes a RuntimeError.
    """
    with _IN_PROCESS:
        opened_before = len(_open_handlers())  # handlers of this thread from before the job stay
        try:
            runpy.run_path(str(path), init_globals={"snakemake": snakemake}, run_name="__main__")
        except SystemExit as stop:
            if stop.code not in (None, 0):
                logging.getLogger("fsgen.pipeline.rulescript").error("%s exited: %s", Path(path).name, stop.code)
                raise RuntimeError(f"{path} exited: {stop.code}") from None
        except BaseException:
            logging.getLogger("fsgen.pipeline.rulescript").exception("%s failed", Path(path).name)
            raise
        finally:
            _close_handlers(keep=opened_before)
