"""fsgen.pipeline.rulescript: rule scripts run inside one process, each logging to its own file."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest

from fsgen.pipeline.rulescript import run_script

SCRIPT = '''
import logging
from pathlib import Path
from fsgen.pipeline.rulescript import log_to
log_to(snakemake.log[0])
logging.getLogger("job").info("job %s says hello", snakemake.params.name)
if snakemake.params.fail == "raise":
    raise ValueError("bad input " + snakemake.params.name)
if snakemake.params.fail == "exit":
    import sys
    sys.exit("stopped " + snakemake.params.name)
Path(snakemake.output[0]).write_text(snakemake.params.name)
'''


def job(tmp_path, name, fail=""):
    return SimpleNamespace(params=SimpleNamespace(name=name, fail=fail), output=[str(tmp_path / f"{name}.out")],
                           log=[str(tmp_path / f"{name}.log")])


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "rule.py"
    path.write_text(SCRIPT)
    return path


def test_each_job_logs_to_its_own_file_and_handlers_are_removed(tmp_path, script):
    root = logging.getLogger()
    before = list(root.handlers)
    for name in ("a", "b"):
        run_script(script, job(tmp_path, name))
    assert root.handlers == before
    assert (tmp_path / "a.out").read_text() == "a"
    assert "job a says hello" in (tmp_path / "a.log").read_text()
    assert "job b" not in (tmp_path / "a.log").read_text()
    assert "job b says hello" in (tmp_path / "b.log").read_text()


def test_concurrent_jobs_in_threads_do_not_mix_logs(tmp_path, script):
    errors = []

    def run(name):
        try:
            run_script(script, job(tmp_path, name))
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        text = (tmp_path / f"t{i}.log").read_text()
        assert f"job t{i} says hello" in text
        assert all(f"job t{j} " not in text for j in range(4) if j != i)


def test_a_failure_is_logged_and_raised(tmp_path, script):
    with pytest.raises(ValueError, match="bad input c"):
        run_script(script, job(tmp_path, "c", fail="raise"))
    text = (tmp_path / "c.log").read_text()
    assert "rule.py failed" in text and "ValueError: bad input c" in text
    assert not (tmp_path / "c.out").exists()


def test_sys_exit_with_a_message_becomes_an_error(tmp_path, script):
    with pytest.raises(RuntimeError, match="stopped d"):
        run_script(script, job(tmp_path, "d", fail="exit"))
    assert "stopped d" in (tmp_path / "d.log").read_text()


def test_log_to_takes_only_its_own_threads_records(tmp_path):
    """Two threads log at the same time, each to its own file (no lock involved)."""
    from fsgen.pipeline.rulescript import _close_handlers, log_to

    barrier = threading.Barrier(2)

    def work(name):
        log_to(tmp_path / f"{name}.log")
        barrier.wait()  # both handlers are attached to the root logger now
        logging.getLogger("work").info("from %s", name)
        barrier.wait()
        _close_handlers()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "from x" in (tmp_path / "x.log").read_text() and "from y" not in (tmp_path / "x.log").read_text()
    assert "from y" in (tmp_path / "y.log").read_text() and "from x" not in (tmp_path / "y.log").read_text()


def test_a_handler_opened_before_the_job_stays(tmp_path, script):
    """A script run without run_script (a `script:` job, or a test calling runpy) keeps its log
    handler; run_script closes only the handlers its own job opened."""
    from fsgen.pipeline.rulescript import _close_handlers, _open_handlers, log_to

    keep = len(_open_handlers())
    outside = log_to(tmp_path / "outside.log")
    try:
        run_script(script, job(tmp_path, "e"))
        assert outside in logging.getLogger().handlers
        logging.getLogger("later").info("still logged")
        assert "still logged" in (tmp_path / "outside.log").read_text()
    finally:
        _close_handlers(keep=keep)
    assert outside not in logging.getLogger().handlers
