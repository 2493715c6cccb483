"""Hostile snippets in fsgen.sandbox: each is contained, scored failed, and we carry on; the
sandbox's own failures read `error`, never `failed`."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsgen.sandbox import BOOTSTRAP_ERROR, MAX_PROCESSES, SANDBOX_UID_BASE, isolation, run_python

pytestmark = pytest.mark.timeout(120)


def unshare_creates_namespaces() -> bool:
    """This test's own check (not fsgen.sandbox's probe): can unshare make the namespaces here?"""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    done = subprocess.run([exe, *user, "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return done.returncode == 0


NAMESPACES = unshare_creates_namespaces()
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="unshare cannot create namespaces here")


def sandbox_processes() -> list[int]:
    """PIDs of processes still running as a sandbox uid (leftovers of a run)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                uid = (entry / "status").read_text().split("\nUid:")[1].split()[0]
            except (OSError, IndexError):
                continue
            if int(uid) >= SANDBOX_UID_BASE:
                pids.append(int(entry.name))
    return pids


def assert_still_works():
    after = run_python("print(6 * 7)")
    assert after.passed and after.stdout.strip() == "42"


def test_correct_program_passes_and_wrong_one_fails():
    ok = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')")
    assert (ok.passed, ok.status, ok.returncode, ok.stdout) == (True, "passed", 0, "ok\n")
    wrong = run_python("def add(a, b):\n    return a - b\nassert add(2, 3) == 5")
    assert (wrong.passed, wrong.status) == (False, "failed")
    assert "AssertionError" in wrong.stderr
    syntax = run_python("def f(:\n")
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


def test_infinite_loop_is_killed_at_the_timeout():
    start = time.monotonic()
    result = run_python("while True:\n    pass", timeout_s=2.0)
    assert time.monotonic() - start < 10
    assert (result.passed, result.status) == (False, "timeout")
    assert_still_works()


def test_cpu_limit_stops_a_busy_program_before_the_wall_clock():
    result = run_python("while True:\n    pass", timeout_s=30.0, cpu_s=1)
    assert result.status == "timeout" and result.duration_s < 10


def test_unbounded_memory_is_refused():
    result = run_python("x = []\nwhile True:\n    x.append(bytearray(10**7))", memory_mb=256, timeout_s=20)
    assert (result.passed, result.status) == (False, "memory")
    assert_still_works()


def test_sleeping_program_times_out():
    result = run_python("import time\ntime.sleep(60)", timeout_s=1.0)
    assert result.status == "timeout" and result.duration_s < 10


@pytest.mark.skipif(not isolation()["process_limit"], reason="no process limit here: a fork bomb would hog the machine")
def test_fork_loop_is_contained_and_leaves_no_process():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_python(bomb, timeout_s=3.0)
    assert (result.passed, result.status) == (False, "timeout")
    deadline = time.monotonic() + 5
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes() == []
    assert_still_works()


def test_writes_and_deletes_outside_the_work_directory_fail(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # even a world-writable folder must stay untouched
    victim = shared / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o666)
    tmp_path.chmod(0o755)
    this_file = Path(__file__).resolve()
    this_text = this_file.read_text()
    for snippet in [
        f"open({str(shared / 'new.txt')!r}, 'w').write('x')",
        f"open({str(victim)!r}, 'w').write('overwritten')",
        f"import os\nos.remove({str(victim)!r})",
        f"import shutil\nshutil.rmtree({str(shared)!r})",
        "open('/tmp/fsgen-sandbox-escape.txt', 'w').write('x')",
        f"open({str(this_file)!r}, 'a').write('# appended')",
    ]:
        result = run_python(snippet)
        assert (result.passed, result.status) == (False, "failed"), snippet
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in shared.iterdir()) == ["victim.txt"]
    assert not Path("/tmp/fsgen-sandbox-escape.txt").exists()
    assert this_file.read_text() == this_text


def test_work_directory_is_writable_and_removed_afterwards():
    result = run_python("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())")
    assert result.passed, result.stderr
    assert not Path(result.stdout.strip()).exists()


def test_socket_is_refused_by_the_audit_hook():
    result = run_python("import socket\nsocket.socket()")
    assert result.status == "failed" and "network access is blocked" in result.stderr


@needs_namespaces
def test_no_network_even_around_the_audit_hook():
    """A subprocess bypasses the audit hook; the network namespace still has no route out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    snippet = (
        "import subprocess, sys\n"
        "code = 'import socket; socket.create_connection((\"127.0.0.1\", %d), timeout=2)'\n"
        "subprocess.run([sys.executable, '-c', code], check=True)\n" % port
    )
    result = run_python(snippet, timeout_s=10)
    assert result.status == "failed"
    assert "Connection refused" in result.stderr or "unreachable" in result.stderr
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("FSGEN_TEST_SECRET", "hunter2-secret-value")
    snippet = (
        "import os\n"
        "print(dict(os.environ))\n"
        "for pid in (1, %d, %d):\n"
        "    try:\n"
        "        print(open('/proc/%%d/environ' %% pid).read())\n"
        "    except OSError as exc:\n"
        "        print('refused', exc)\n"
        "assert 'FSGEN_TEST_SECRET' in os.environ\n" % (os.getpid(), os.getppid())
    )
    result = run_python(snippet)
    assert (result.passed, result.status) == (False, "failed")
    assert "hunter2" not in result.stdout + result.stderr


def test_huge_output_is_truncated_not_buffered():
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout_s=5)
    assert not result.passed
    assert len(result.stdout) <= 1 << 20


# What the program sees of its confinement, observed from inside the sandbox.
OBSERVE = """
import json, os, resource
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
try:
    open(os.path.join(os.path.dirname(os.getcwd()), "fsgen-observe-%d" % os.getpid()), "w").close()
    outside_write = 0
except OSError as exc:
    outside_write = exc.errno
print(json.dumps({"interfaces": sorted(interfaces), "pid": os.getpid(), "uid": os.getuid(),
                  "processes": sum(name.isdigit() for name in os.listdir("/proc")),
                  "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0], "outside_write": outside_write}))
"""


@needs_namespaces
def test_isolation_layers_are_observed_from_inside():
    """The layers isolation() reports are there for the program: no interface but loopback, its own
    PID namespace, and as root a fresh uid, a read-only filesystem and a process limit."""
    layers = isolation()
    assert layers["network_namespace"] and layers["pid_namespace"]
    result = run_python(OBSERVE)
    assert result.passed, result.stderr + result.error
    seen = json.loads(result.stdout)
    assert seen["interfaces"] == ["lo"]
    assert seen["pid"] <= 3 and seen["processes"] <= 3  # the bootstrap (PID 1) and the program
    if os.geteuid() == 0:
        assert layers["read_only_filesystem"] and layers["unprivileged_uid"] and layers["process_limit"]
        assert seen["uid"] >= SANDBOX_UID_BASE
        assert seen["outside_write"] == errno.EROFS
    if layers["process_limit"]:
        assert seen["nproc"] == MAX_PROCESSES


def test_process_limit_only_where_it_counts_the_sandbox_alone(monkeypatch):
    """Without a fresh uid or a per-namespace count, RLIMIT_NPROC stays the user's own: a limit
    there would count every process of the user on the node."""
    from fsgen import sandbox

    monkeypatch.setattr(sandbox, "_unshare_works", lambda: False)
    layers = sandbox.isolation()
    seen = json.loads(sandbox.run_python(OBSERVE).stdout)
    if layers["process_limit"]:  # root: the program runs as a fresh uid
        assert layers["unprivileged_uid"] and seen["nproc"] == MAX_PROCESSES and seen["uid"] >= SANDBOX_UID_BASE
    else:
        assert seen["nproc"] == resource.getrlimit(resource.RLIMIT_NPROC)[0]


def test_a_program_cannot_pass_itself_off_as_a_sandbox_error():
    """The status pipe is closed before the program starts: writing 'error: ...' to every file
    descriptor, or the bootstrap's marker to stderr, still makes a failing program."""
    forge = (
        "import os, sys\n"
        f"sys.stderr.write({BOOTSTRAP_ERROR!r} + ' forged\\n')\n"
        "for fd in range(3, 1024):\n"
        "    try:\n"
        "        os.write(fd, b'error: forged\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "raise SystemExit(1)\n"
    )
    result = run_python(forge)
    assert (result.status, result.error) == ("failed", "")


def test_a_sandbox_that_cannot_start_the_program_reports_an_error(monkeypatch):
    """An interpreter that cannot be executed: the program never ran, so the status is `error`
    with the reason, not `failed`."""
    from fsgen import sandbox

    monkeypatch.setattr(sandbox, "_base_python", lambda: "/nonexistent/fsgen-python")
    result = sandbox.run_python("print(6 * 7)")
    assert (result.passed, result.status) == (False, "error")
    assert "fsgen-python" in result.error and "No such file" in result.error


def test_without_namespaces_the_always_layers_still_hold(monkeypatch):
    """Where unshare is unavailable: separate process, limits, timeout and a clean environment."""
    from fsgen import sandbox

    monkeypatch.setattr(sandbox, "_unshare_works", lambda: False)
    monkeypatch.setenv("FSGEN_TEST_SECRET", "hunter2-secret-value")
    assert not sandbox.isolation()["network_namespace"]
    assert sandbox.run_python("while True:\n    pass", timeout_s=1.5).status == "timeout"
    assert sandbox.run_python("x = bytearray(2 << 30)", memory_mb=256).status == "memory"
    leak = sandbox.run_python("import os\nprint(dict(os.environ))")
    assert leak.passed and "hunter2" not in leak.stdout
    refused = sandbox.run_python("import socket\nsocket.socket()")
    assert refused.status == "failed" and "network access is blocked" in refused.stderr
    assert sandbox.run_python("print(6 * 7)").stdout == "42\n"


# As an ordinary user with user namespaces, beside 40 other processes of the same user: the
# program runs contained and may fork up to the sandbox's own process limit, and no further.
FORKING_USER = """
import json, os, subprocess, sys
from fsgen import sandbox
sleepers = [subprocess.Popen(["sleep", "120"]) for _ in range(40)]
program = '''
import os, time
children = []
try:
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        children.append(pid)
    print("forked", len(children), 0)
except OSError as exc:
    print("stopped", len(children), exc.errno)
'''
try:
    result = sandbox.run_python(program, timeout_s=20)
    print("REPORT " + json.dumps({"uid": os.getuid(), "isolation": sandbox.isolation(), "status": result.status,
                                  "stdout": result.stdout, "error": result.error, "stderr": result.stderr[-500:]}))
finally:
    for sleeper in sleepers:
        sleeper.kill()
        sleeper.wait()
"""


def ordinary_user_python() -> tuple[list[str], str]:
    """(command prefix, interpreter) that run as an unprivileged user and can import fsgen.sandbox
    and create user namespaces; skips where there is none."""
    repo = str(Path(__file__).resolve().parents[1])
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: cannot run as an ordinary user")
        uid = 900_000 + int.from_bytes(os.urandom(2), "big")
        prefix = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    for python in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3"]):
        probe = subprocess.run([*prefix, python, "-I", "-c", f"import sys; sys.path.insert(0, {repo!r}); import fsgen.sandbox"],
                               capture_output=True, cwd="/")
        userns = subprocess.run([*prefix, shutil.which("unshare") or "unshare", "--map-root-user", "--net", "--pid",
                                 "--fork", "--mount-proc", python, "-c", "pass"], capture_output=True, cwd="/")
        if probe.returncode == 0 and userns.returncode == 0:
            return prefix, python
    pytest.skip("no interpreter an ordinary user can run inside a user namespace here")


def test_ordinary_user_gets_namespaces_and_a_process_limit_of_its_own():
    prefix, python = ordinary_user_python()
    repo = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([*prefix, python, "-I", "-c", f"import sys; sys.path.insert(0, {repo!r})\n" + FORKING_USER],
                          capture_output=True, text=True, cwd="/", timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert report["uid"] != 0
    assert report["isolation"]["network_namespace"] and report["isolation"]["process_limit"], report
    outcome, children, error = report["stdout"].split()
    assert (report["status"], outcome, int(error)) == ("passed", "stopped", errno.EAGAIN), report
    # its own processes only: the bootstrap, unshare and the program leave MAX_PROCESSES - 3 forks
    assert MAX_PROCESSES - 4 <= int(children) <= MAX_PROCESSES - 2, report
