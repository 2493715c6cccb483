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
- as root: the program runs as a fresh unprivileged uid (never a real user's), so RLIMIT_NPROC
  caps its process count (root ignores RLIMIT_NPROC), it cannot read other processes' environments,
  and root-owned files are not writable even where the read-only remount is unavailable.
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
MAX_PROCESSES = 32  # RLIMIT_NPROC for the sandbox uid (only enforced for non-root uids)
MAX_OPEN_FILES = 64
SANDBOX_UID_BASE = 1_000_000  # fresh uids are drawn above this (no real user lives there)
BOOTSTRAP_ERROR = "fsgen-sandbox-error:"  # the bootstrap's own failures start with this


@dataclass
class SandboxResult:
    passed: bool  # the program exited with status 0 within its limits
    status: str  # passed | failed | timeout | memory | error (the sandbox itself failed)
    returncode: int | None  # None when killed for the wall-clock timeout
    stdout: str  # tail, at most OUTPUT_LIMIT_BYTES
    stderr: str
    duration_s: float


# Runs in the child interpreter: refuse sockets, then run program.py as __main__.
_RUNNER = """
import sys
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
def die(msg):
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
          (resource.RLIMIT_CPU, cfg["cpu"]), (resource.RLIMIT_NPROC, cfg["nproc"])]
for kind, value in limits:
    # CPU: SIGXCPU at the soft limit, SIGKILL a second later at the hard one.
    resource.setrlimit(kind, (value, value + 1 if kind == resource.RLIMIT_CPU else value))
if cfg["uid"] is not None:
    try:
        os.setgroups([]); os.setgid(cfg["uid"]); os.setuid(cfg["uid"])
    except OSError as exc:
        die("dropping privileges failed: %s" % exc)
pid = os.fork()
if pid == 0:
    try:
        os.execve(cfg["python"], [cfg["python"], "-I", "-c", cfg["runner"]], cfg["env"])
    finally:
        os._exit(126)
_, status = os.waitpid(pid, 0)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


def _unshare_flags() -> list[str]:
    flags = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return flags if os.geteuid() == 0 else ["--map-root-user", *flags]


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


def isolation() -> dict[str, bool]:
    """Which confinement layers hold on this machine (see the module docstring)."""
    namespaces = _unshare_works()
    return {
        "separate_process": True,
        "rlimits": True,
        "scrubbed_environment": True,
        "network_namespace": namespaces,
        "pid_namespace": namespaces,
        "read_only_filesystem": namespaces and os.geteuid() == 0,
        "unprivileged_uid": os.geteuid() == 0,
    }


def _world_reachable(path: str) -> bool:
    """Whether any uid can execute `path` (every folder above it searchable by others)."""
    path = Path(path)
    folders_ok = all(os.stat(folder).st_mode & 0o001 for folder in path.parents)
    return folders_ok and bool(os.stat(path).st_mode & 0o001)


def _read_tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - OUTPUT_LIMIT_BYTES))
        return f.read().decode("utf-8", errors="replace")


def _status(returncode: int | None, timed_out: bool, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if BOOTSTRAP_ERROR in stderr:
        return "error"
    if returncode == 0:
        return "passed"
    if returncode in (128 + signal.SIGXCPU, -signal.SIGXCPU):
        return "timeout"  # CPU-time limit
    if "MemoryError" in stderr:
        return "memory"
    return "failed"


def run_python(
    program: str,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
) -> SandboxResult:
    """Run `program` (Python source) confined; it passes when it exits 0 within the limits.

    `cpu_s` defaults to the wall-clock timeout rounded up, plus one second.
    """
    cpu_s = int(cpu_s if cpu_s is not None else timeout_s + 1.999)
    root = os.geteuid() == 0
    namespaces = _unshare_works()
    base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    reachable = _world_reachable(base_python)
    # An interpreter the sandbox uid cannot reach (e.g. under /root) is shown to it inside the
    # mount namespace; without one we cannot drop privileges and stay root (weaker: no NPROC).
    python_home = sys.base_prefix if root and not reachable and namespaces else None
    can_drop = root and (reachable or python_home is not None)
    uid = SANDBOX_UID_BASE + secrets.randbelow(1 << 30) if can_drop else None
    python = base_python
    start = time.monotonic()
    # Work directory (the program's) and output directory (ours: the program cannot touch it).
    workdir = Path(tempfile.mkdtemp(prefix="fsgen-sandbox-")).resolve()
    outdir = Path(tempfile.mkdtemp(prefix="fsgen-sandbox-out-"))
    try:
        (workdir / "program.py").write_text(program, encoding="utf-8")
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(workdir / "program.py", uid, uid)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir)}
        if python_home is not None:
            shown = workdir / ".python"
            python = str(shown / os.path.relpath(base_python, os.path.realpath(python_home)))
            env["LD_LIBRARY_PATH"] = str(shown / "lib")  # libpython, when linked by absolute rpath
        cfg = {
            "workdir": str(workdir),
            "readonly_mounts": namespaces and root,
            "uid": uid,
            "python": python,
            "python_home": python_home,
            "runner": _RUNNER,
            "env": env,
            "memory": memory_mb << 20,
            "cpu": cpu_s,
            "fsize": FILE_SIZE_LIMIT_BYTES,
            "nofile": MAX_OPEN_FILES,
            "nproc": MAX_PROCESSES,
            "error_marker": BOOTSTRAP_ERROR,
        }
        command = [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg)]
        if namespaces:
            command = [shutil.which("unshare"), *_unshare_flags(), *command]
        with open(outdir / "stdout", "wb") as out, open(outdir / "stderr", "wb") as err:
            try:
                proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    cwd=workdir, env={"PATH": env["PATH"], "LANG": "C.UTF-8"}, start_new_session=True,
                )
            except OSError as exc:
                return SandboxResult(False, "error", None, "", f"{BOOTSTRAP_ERROR} {exc}", time.monotonic() - start)
            timed_out = False
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
                _kill_group(proc)
        stdout, stderr = _read_tail(outdir / "stdout"), _read_tail(outdir / "stderr")
        status = _status(returncode, timed_out, stderr)
        return SandboxResult(status == "passed", status, returncode, stdout, stderr, time.monotonic() - start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(outdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's process group (the PID namespace takes the rest down with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
