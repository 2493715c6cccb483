"""Run model-written Python (MBPP) in a separate, confined process.

Never call this without the config's explicit opt-in (`allow_code_execution: true`); the
harness checks the opt-in, this module only confines.

What confines the program (`isolation()` says which layers this machine has):
- always: a separate `python -I` process (never the pipeline's own), started in a fresh temporary
  directory that is removed afterwards; an empty environment (only PATH, LANG, HOME); stdin closed;
  a wall-clock timeout after which the whole process group is killed; rlimits on CPU time,
  address space (memory), file size, open files and core dumps; an audit hook in the child that
  refuses to create sockets (a courtesy layer only: ctypes or a subprocess can bypass it).
- with `unshare` (root, or unprivileged user namespaces): new network namespace (no interface
  but a down loopback: no network at all), new PID namespace (when the program's main process
  ends or is killed, the kernel kills every process it forked: fork bombs die with it), new mount
  namespace in which every mount except the work directory is remounted read-only (writing or
  deleting anywhere outside the work directory fails with EROFS).
- as root: the program runs as a fresh unprivileged uid (never a real user's), so it cannot read
  other processes' environments, and root-owned files are not writable even where the read-only
  remount is unavailable.
- RLIMIT_NPROC (at most MAX_PROCESSES processes) only where it counts the sandbox's processes
  alone: under a fresh uid, or in a fresh user namespace on kernels that count processes per
  namespace (Linux >= 5.14; probed once). A plain RLIMIT_NPROC counts every process of the user
  on the node, so a pipeline sharing the node with the user's other jobs would see the program's
  `fork` fail for reasons that have nothing to do with the program. Where neither holds (no
  root, no user namespaces) the process count is not limited: a fork bomb runs until the
  wall-clock timeout (`isolation()["process_limit"]` is False there).

Failures of the sandbox itself never look like a failing program: the bootstrap and the runner
report over a pipe that the program cannot write to (`error: ...` lines, and `running` just before
the program starts). A run that never reached `running` (unshare, the bootstrap, fork, exec or
the interpreter's start failed) has status `error` and the reason in `SandboxResult.error`;
scorers must report it apart from wrong answers (`fsgen.harness.code_eval`).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LIMIT_BYTES = 1 << 20  # at most this much of stdout/stderr is kept (the tail)
FILE_SIZE_LIMIT_BYTES = 64 << 20  # RLIMIT_FSIZE: also bounds how much output the program can write
MAX_PROCESSES = 32  # RLIMIT_NPROC, set only where it counts the sandbox's own processes alone
MAX_OPEN_FILES = 64
SANDBOX_UID_BASE = 1_000_000  # fresh uids are drawn above this (no real user lives there)
BOOTSTRAP_ERROR = "fsgen-sandbox-error:"  # the bootstrap's own failures, on stderr (for people to read)
RUNNING = b"running"  # written to the status pipe just before the program starts


@dataclass
class SandboxResult:
    passed: bool  # the program exited with status 0 within its limits
    status: str  # passed | failed | timeout | memory | error (the sandbox itself failed)
    returncode: int | None  # None when killed for the wall-clock timeout
    stdout: str  # tail, at most OUTPUT_LIMIT_BYTES
    stderr: str
    duration_s: float
    error: str = ""  # why the sandbox failed (status "error" only): not the program's fault


# Runs in the child interpreter: report "running" on the status pipe and close it (the program
# never holds it), refuse sockets, then run program.py as __main__.
_RUNNER = """
import os, sys
_fsgen_status = int(sys.argv[1])
os.write(_fsgen_status, b"running\\n")
os.close(_fsgen_status)
del _fsgen_status
sys.argv = ["program.py"]
def _fsgen_no_network(event, args):
    if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"):
        raise PermissionError("fsgen sandbox: network access is blocked (" + event + ")")
sys.addaudithook(_fsgen_no_network)
del _fsgen_no_network
import runpy
runpy.run_path("program.py", run_name="__main__")
"""

# Runs first (as PID 1 of the new namespaces when unshare is available): confine, drop
# privileges, fork the program, and exit with its status (which tears the namespace down).
_BOOTSTRAP = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
def die(msg):
    os.write(status_fd, ("error: %s\n" % msg).encode())
    sys.stderr.write("%s %s\n" % (cfg["error_marker"], msg)); sys.stderr.flush(); os._exit(125)
work = cfg["workdir"]
if cfg["readonly_mounts"]:
    libc = ctypes.CDLL(None, use_errno=True)
    MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
    libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    if libc.mount(work.encode(), work.encode(), None, MS_BIND, None) != 0:
        die("bind mount of the work directory failed: errno %d" % ctypes.get_errno())
    if cfg["python_home"] is not None:
        # The interpreter lives where the sandbox uid cannot reach it (e.g. under /root): show
        # its installation inside the work directory (remounted read-only below).
        os.mkdir(os.path.join(work, ".python"))
        if libc.mount(cfg["python_home"].encode(), os.path.join(work, ".python").encode(), None, MS_BIND | MS_REC, None) != 0:
            die("bind mount of the Python installation failed: errno %d" % ctypes.get_errno())
    points = []
    for line in open("/proc/self/mountinfo"):
        point = line.split()[4].encode().decode("unicode_escape")
        if point != work:
            points.append(point)
    for point in points:
        libc.mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    probe = os.path.join(os.path.dirname(work), ".fsgen-sandbox-probe-%d" % os.getpid())
    try:
        open(probe, "w").close(); os.unlink(probe)
        die("read-only remount did not take effect")
    except OSError:
        pass
os.chdir(work)
limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, cfg["fsize"]),
          (resource.RLIMIT_NOFILE, cfg["nofile"]), (resource.RLIMIT_AS, cfg["memory"]),
          (resource.RLIMIT_CPU, cfg["cpu"])]
if cfg["nproc"] is not None:
    limits.append((resource.RLIMIT_NPROC, cfg["nproc"]))
for kind, value in limits:
    # CPU: SIGXCPU at the soft limit, SIGKILL a second later at the hard one.
    resource.setrlimit(kind, (value, value + 1 if kind == resource.RLIMIT_CPU else value))
if cfg["uid"] is not None:
    try:
        os.setgroups([]); os.setgid(cfg["uid"]); os.setuid(cfg["uid"])
    except OSError as exc:
        die("dropping privileges failed: %s" % exc)
try:
    pid = os.fork()
except OSError as exc:
    die("fork failed: %s" % exc)
if pid == 0:
    try:
        os.execve(cfg["python"], [cfg["python"], "-I", "-c", cfg["runner"], str(status_fd)], cfg["env"])
    except BaseException as exc:
        os.write(status_fd, ("error: exec of %s failed: %s\n" % (cfg["python"], exc)).encode())
    finally:
        os._exit(126)
os.close(status_fd)  # only the program's runner holds it now, until it starts the program
_, status = os.waitpid(pid, 0)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


def _unshare_flags() -> list[str]:
    flags = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return flags if os.geteuid() == 0 else ["--map-root-user", *flags]


def _base_python() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


@functools.lru_cache(maxsize=1)
def _unshare_works() -> bool:
    """Whether `unshare` can create the namespaces here (probed once per process)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, *_unshare_flags(), "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# In a fresh user namespace: allow 3 processes and fork once. Inside are unshare's own process,
# this interpreter and its child (3); the caller is a 4th process of the same user outside. Where
# the kernel counts only the namespace's processes (Linux >= 5.14) the fork succeeds; where it
# counts all of the user's processes it fails (EAGAIN).
_NPROC_PROBE = """
import os, resource
resource.setrlimit(resource.RLIMIT_NPROC, (3, 3))
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""


@functools.lru_cache(maxsize=1)
def _nproc_counts_namespace_only() -> bool:
    """Whether RLIMIT_NPROC set in our user namespace counts only the sandbox's processes."""
    if os.geteuid() == 0 or not _unshare_works():
        return False  # root runs the program under a fresh uid instead (and ignores NPROC itself)
    command = [shutil.which("unshare"), *_unshare_flags(), _base_python(), "-I", "-c", _NPROC_PROBE]
    try:
        return subprocess.run(command, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _world_reachable(path: str) -> bool:
    """Whether any uid can execute `path` (every folder above it searchable by others)."""
    path = Path(path)
    try:
        folders_ok = all(os.stat(folder).st_mode & 0o001 for folder in path.parents)
        return folders_ok and bool(os.stat(path).st_mode & 0o001)
    except OSError:
        return False  # missing: the bootstrap's exec fails and reports it


@dataclass
class _Plan:
    namespaces: bool  # unshare: network, PID and mount namespaces
    drop_uid: bool  # the program runs as a fresh uid (root only)
    python_home: str | None  # shown inside the mount namespace when the fresh uid cannot reach it
    process_limit: bool  # RLIMIT_NPROC counts the sandbox's processes alone


def _plan() -> _Plan:
    root = os.geteuid() == 0
    namespaces = _unshare_works()
    reachable = _world_reachable(_base_python())
    # An interpreter the sandbox uid cannot reach (e.g. under /root) is shown to it inside the
    # mount namespace; without one we cannot drop privileges and stay root.
    python_home = sys.base_prefix if root and not reachable and namespaces else None
    drop_uid = root and (reachable or python_home is not None)
    process_limit = drop_uid or (not root and _nproc_counts_namespace_only())
    return _Plan(namespaces, drop_uid, python_home, process_limit)


def isolation() -> dict[str, bool]:
    """Which confinement layers hold on this machine (see the module docstring)."""
    plan = _plan()
    return {
        "separate_process": True,
        "rlimits": True,
        "scrubbed_environment": True,
        "network_namespace": plan.namespaces,
        "pid_namespace": plan.namespaces,
        "read_only_filesystem": plan.namespaces and os.geteuid() == 0,
        "unprivileged_uid": plan.drop_uid,
        "process_limit": plan.process_limit,
    }


def _read_tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - OUTPUT_LIMIT_BYTES))
        return f.read().decode("utf-8", errors="replace")


def _read_status(fd: int) -> list[str]:
    """The lines on the status pipe (every writer has exited or closed it by now)."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace").splitlines()


def _sandbox_error(status_lines: list[str], stderr: str) -> str:
    """Why the sandbox failed before the program ran ("" when the program ran)."""
    errors = [line[len("error: "):] for line in status_lines if line.startswith("error: ")]
    if errors:
        return "; ".join(errors)
    if RUNNING.decode() in status_lines:
        return ""
    last = stderr.strip().splitlines()[-1:] or ["no output"]
    return f"the program never started (sandbox start-up failed: {last[0][:300]})"


def _status(returncode: int | None, timed_out: bool, stderr: str, error: str) -> str:
    if error:
        return "error"
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "passed"
    if returncode in (128 + signal.SIGXCPU, -signal.SIGXCPU):
        return "timeout"  # CPU-time limit
    if "MemoryError" in stderr:
        return "memory"
    return "failed"


def _bootstrap_config(plan: _Plan, workdir: Path, memory_mb: int, cpu_s: int, status_fd: int) -> dict:
    """The bootstrap's settings; chowns the work directory to the fresh uid when there is one."""
    uid = SANDBOX_UID_BASE + secrets.randbelow(1 << 30) if plan.drop_uid else None
    if uid is not None:
        os.chown(workdir, uid, uid)
        os.chown(workdir / "program.py", uid, uid)
    python = _base_python()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir)}
    if plan.python_home is not None:
        shown = workdir / ".python"
        python = str(shown / os.path.relpath(python, os.path.realpath(plan.python_home)))
        env["LD_LIBRARY_PATH"] = str(shown / "lib")  # libpython, when linked by absolute rpath
    return {
        "workdir": str(workdir),
        "readonly_mounts": plan.namespaces and os.geteuid() == 0,
        "uid": uid,
        "python": python,
        "python_home": plan.python_home,
        "runner": _RUNNER,
        "env": env,
        "memory": memory_mb << 20,
        "cpu": cpu_s,
        "fsize": FILE_SIZE_LIMIT_BYTES,
        "nofile": MAX_OPEN_FILES,
        "nproc": MAX_PROCESSES if plan.process_limit else None,
        "error_marker": BOOTSTRAP_ERROR,
        "status_fd": status_fd,
    }


def run_python(
    program: str,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
) -> SandboxResult:
    """Run `program` (Python source) confined; it passes when it exits 0 within the limits.

    `cpu_s` defaults to the wall-clock timeout rounded up, plus one second. Status `error` means
    the sandbox could not run the program (reason in `.error`), never that the program failed.
    """
    cpu_s = int(cpu_s if cpu_s is not None else timeout_s + 1.999)
    plan = _plan()
    start = time.monotonic()
    # Work directory (the program's) and output directory (ours: the program cannot touch it).
    workdir = Path(tempfile.mkdtemp(prefix="fsgen-sandbox-")).resolve()
    outdir = Path(tempfile.mkdtemp(prefix="fsgen-sandbox-out-"))
    status_read, status_write = os.pipe()
    try:
        (workdir / "program.py").write_text(program, encoding="utf-8")
        cfg = _bootstrap_config(plan, workdir, memory_mb, cpu_s, status_write)
        command = [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg)]
        if plan.namespaces:
            command = [shutil.which("unshare"), *_unshare_flags(), *command]
        returncode, timed_out, launch_error = _launch(command, workdir, outdir, status_write, timeout_s)
        os.close(status_write)
        status_write = None
        stdout, stderr = _read_tail(outdir / "stdout"), _read_tail(outdir / "stderr")
        error = launch_error or _sandbox_error(_read_status(status_read), stderr)
        status = _status(returncode, timed_out, stderr, error)
        return SandboxResult(status == "passed", status, returncode, stdout, stderr,
                             time.monotonic() - start, error)
    finally:
        for fd in (status_read, status_write):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(outdir, ignore_errors=True)


def _launch(command: list[str], workdir: Path, outdir: Path, status_fd: int,
            timeout_s: float) -> tuple[int | None, bool, str]:
    """Start the sandbox and wait: (returncode or None, timed out, why it could not start or "")."""
    with open(outdir / "stdout", "wb") as out, open(outdir / "stderr", "wb") as err:
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(status_fd,),
                cwd=workdir, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,
            )
        except OSError as exc:
            return None, False, f"starting the sandbox failed: {exc}"
        try:
            return proc.wait(timeout=timeout_s), False, ""
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None, True, ""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's process group (the PID namespace takes the rest down with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
