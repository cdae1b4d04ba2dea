"""Run untrusted generated programs against their tests, each in a sandboxed subprocess: generated
code never runs inside this process. Also the programs that test it: HumanEval's tests
(`humaneval_program`) and the demo's behavioural check (`demo_program`).

    results = execution.run(programs, timeout=10)
    # [{"status": "passed" | "failed" | "timeout" | "limit", "error": first line or None, "seconds": ...}]

A program is a whole Python file (the candidate code, then the code that tests it): it passes when
it exits with status 0. Each one gets a fresh temporary directory as its working directory, an
environment of PATH, HOME, TMPDIR and LANG only, a session of its own (so the whole process group is
killed at the end), and resource limits (setrlimit): CPU seconds, address space, file size, open
files, processes, no core files. Statuses: "timeout" past the wall clock; "limit" when a limit
stopped it (MemoryError, a file too large, no process left to fork, SIGXCPU, SIGKILL); "failed"
with the first line of the error (the exception's own line) otherwise.

Run as root (CI, containers), the launcher (this file, run as a script) also enters new mount and
network namespaces: no network but a loopback that is down; the working directory is bound over
/tmp and /var/tmp, and empty tmpfs over /dev/shm and /run/lock; then it drops to a user id of its
own (one per parallel worker, no login, no groups) before it starts the program. So the program
cannot reach the network, write outside its directory (everything else is root's), signal the
harness or a program in another worker, or fork past its process limit, and every process left
under that user id is killed when it ends. Not root: limits and a session only; the network is cut
where the kernel allows unprivileged user namespaces, and nothing stops the program from writing
where you may write or signalling your processes: run untrusted code as root in a container or a
VM. `isolation()` reports what this machine gives.
"""
import ctypes
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

UID_BASE = 61000  # sandbox user ids UID_BASE + worker: unused by any account on a normal system
MAX_FILE = 16 * 2 ** 20  # bytes a program may write to one file, its output included
MAX_PROCESSES = 16
MAX_OPEN_FILES = 64
# linux/sched.h and linux/mount.h
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 262144
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
LIMIT_ERRORS = ("MemoryError", "File too large", "Resource temporarily unavailable")


def run(programs, timeout=10.0, memory_mb=1024, workers=None):
    """Results in the order of `programs`, `workers` at a time (default: one per core)."""
    workers = workers or os.cpu_count() or 1
    free = list(range(workers))  # worker slots, each with its own sandbox user id
    lock = threading.Lock()

    def one(program):
        with lock:
            slot = free.pop()
        try:
            return run_one(program, timeout=timeout, memory_mb=memory_mb, uid=UID_BASE + slot)
        finally:
            with lock:
                free.append(slot)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def run_one(program, timeout=10.0, memory_mb=1024, uid=UID_BASE):
    """One program in the sandbox; see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="ddpt-exec-") as work, \
            tempfile.TemporaryDirectory(prefix="ddpt-exec-out-") as logs:  # where the program cannot reach
        with open(os.path.join(work, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        if os.geteuid() == 0:
            os.chown(work, uid, uid)
        err = open(os.path.join(logs, "err"), "w+b")
        cmd = [sys.executable, "-I", os.path.abspath(__file__), str(uid), str(timeout), str(memory_mb), logs]
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        t0 = time.perf_counter()
        launcher = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
        try:
            launcher.wait(timeout=timeout + 30)  # a backstop: the launcher keeps the clock itself
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        seconds = time.perf_counter() - t0
        err.seek(max(0, os.fstat(err.fileno()).st_size - 4096))
        tail = err.read().decode("utf-8", "replace")
        err.close()
        try:
            code, timed_out = map(int, open(os.path.join(logs, "result")).read().split())
        except (OSError, ValueError):  # the launcher itself was killed: count it as the program's doing
            code, timed_out = launcher.returncode or -signal.SIGKILL, 0
    return _status(code, tail, bool(timed_out)) | {"seconds": round(seconds, 3)}


def _status(code, stderr_tail, timed_out):
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    error = lines[-1].strip() if lines else None  # a traceback ends with the exception's own line
    if timed_out:
        return {"status": "timeout", "error": None}
    if code == 0:
        return {"status": "passed", "error": None}
    if code < 0:  # killed by a signal: SIGXCPU (CPU limit) or SIGKILL (out of memory) are limits
        name = signal.Signals(-code).name
        return {"status": "limit" if name in ("SIGXCPU", "SIGXFSZ", "SIGKILL") else "failed", "error": name}
    # anywhere in the tail, not only its last line: the processes of a fork bomb interleave their tracebacks
    limited = any(e in stderr_tail for e in LIMIT_ERRORS)
    return {"status": "limit" if limited else "failed", "error": error or f"exit status {code}"}


def isolation():
    """What the sandbox gives on this machine, found by running a probe program through it."""
    probe = ("import os, socket\n"
             "up = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
             "open('/tmp/ddpt-probe', 'w').write('x')\n"
             "print(os.getuid(), ','.join(up), os.path.exists('/tmp/program.py'), file=__import__('sys').stderr)\n"
             "raise SystemExit(1)\n")
    result = run_one(probe, timeout=30)
    uid, devices, private_tmp = (result["error"] or "? ? ?").split(" ")
    return {"own_user": uid != str(os.getuid()), "network": devices not in ("", "lo"),
            "private_tmp": private_tmp == "True" and not os.path.exists("/tmp/ddpt-probe")}


# ---- programs that test generated code ---------------------------------------------------------
def humaneval_program(problem, code):
    """The program that tests one completion. Code that defines the function comes after the
    prompt closed by `pass` (so the prompt's imports and helpers stay, and the new definition
    replaces the stub); code that does not is the function's body, after the prompt. Then the
    tests and check(entry_point)."""
    if re.search(rf"^\s*def {re.escape(problem['entry_point'])}\s*\(", code, re.MULTILINE):
        body = problem["nl"].rstrip() + "\n    pass\n\n\n" + code
    else:
        lines = code.splitlines() or ["pass"]
        if not lines[0].startswith((" ", "\t")):  # generate() strips the first line's indentation
            lines[0] = "    " + lines[0]
        body = problem["nl"] + "\n".join(lines)
    return f"{body}\n\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"



DEMO_DATA = {  # what the demo's named variable holds when its code runs: words to find and replace, or numbers
    "words": ["red cat", "blue dog", "red cat", "tea", "sun map", "blue fox", "ink", "owl key", "box", "red fox",
              "cat tea", "dog", "map ink", "sun", "tea", "key box", "owl", "fox red", "blue", "cat", "ink dog", "map"],
    "numbers": [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2],
}
OBSERVE = """import ast, contextlib, io


def observe(code, name, data):
    # what code shows with `name` bound to data: its printed output, else the value of a final
    # expression; and `name` afterwards
    tree, ns, out, last = ast.parse(code), {name: list(data)}, io.StringIO(), None
    final = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    with contextlib.redirect_stdout(out):
        exec(compile(tree, "<code>", "exec"), ns)
        if final is not None:
            last = eval(compile(ast.Expression(final.value), "<code>", "eval"), ns)
    shown = out.getvalue().strip() or ("" if last is None else repr(last))
    return shown, repr(ns.get(name, "<deleted>"))
"""


def demo_program(pair, code):
    """The demo's behavioural check: the reference and the candidate each run with the pair's
    named variable bound to the same data (DEMO_DATA[pair["fixture"]]) and must show the same
    thing and leave the variable the same (order included: `sorted(x)` does not sort x)."""
    name, data = pair["combo"][1], DEMO_DATA[pair["fixture"]]
    return (f"{OBSERVE}\n\nwant = observe({pair['code']!r}, {name!r}, {data!r})\n"
            f"got = observe({code!r}, {name!r}, {data!r})\n"
            "assert got == want, f'{got} != {want}'\n")


def _libc(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        raise OSError(ctypes.get_errno(), f"{name}: {os.strerror(ctypes.get_errno())}")


def _enter(uid, timeout, memory_mb, logs):
    """The launcher, between the harness and the program: namespaces, then a child that takes the
    sandbox user id and limits and becomes the program. The launcher stays (as root, out of the
    program's reach) to keep the clock, kill whatever the program left behind and reap it: as the
    subreaper, orphans come to it instead of to PID 1, which in a container may never reap them."""
    root = os.geteuid() == 0
    result = open(os.path.join(logs, "result"), "w")  # opened now: /tmp is about to show something else
    if root:
        try:
            _libc("unshare", CLONE_NEWNS | CLONE_NEWNET)
            _libc("mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)  # our mounts stay ours
            for target in (b"/var/tmp", b"/tmp"):  # "." is the working directory, which /tmp then shows
                if os.path.isdir(target):
                    _libc("mount", b".", target, None, MS_BIND, None)
            os.chdir("/tmp")  # the same directory, under the name the program will see
            for target in (b"/dev/shm", b"/run/lock"):
                if os.path.isdir(target):
                    _libc("mount", b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=16m")
        except OSError:
            pass  # a container without CAP_SYS_ADMIN: the user id below still holds; isolation() tells
    else:
        try:
            _libc("unshare", CLONE_NEWUSER | CLONE_NEWNET)
        except OSError:
            pass
    _libc("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        _become_program(uid if root else None, timeout, memory_mb)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.setitimer(signal.ITIMER_REAL, timeout)
    _, status = os.waitpid(pid, 0)
    fired = signal.setitimer(signal.ITIMER_REAL, 0)[0] == 0  # no time left on the clock
    timed_out = fired and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    code = os.waitstatus_to_exitcode(status)
    if root:  # every process of the sandbox user: kill(-1) from that user reaches exactly those
        if os.fork() == 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
            os._exit(0)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    while True:  # reap the killer and every orphan
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    result.write(f"{code} {int(timed_out)}\n")
    result.close()


def _become_program(uid, timeout, memory_mb):
    os.setpgid(0, 0)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    cpu = int(timeout) + 1  # the wall clock normally ends it first
    for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory_mb * 2 ** 20),
                         (resource.RLIMIT_FSIZE, MAX_FILE), (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
                         (resource.RLIMIT_NPROC, MAX_PROCESSES), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    # our interpreter when the sandbox user may run it (not when it lives under root's home), else the system's
    python = sys.executable if os.access(sys.executable, os.X_OK) else "/usr/bin/python3"
    os.execv(python, [python, "-I", "program.py"])


def tester(check, test, timeout):
    """passed(gens): whether each pair's generated code passes check(pair, code) in the sandbox
    (`run`); each distinct program runs once however many rows share it, across rows and seeds."""
    status = {}

    def passed(gens):
        programs = [check(p, g) for p, g in zip(test, gens)]
        new = [q for q in dict.fromkeys(programs) if q not in status]
        status.update(zip(new, run(new, timeout=timeout)))
        return [status[q]["status"] == "passed" for q in programs]
    return passed


if __name__ == "__main__":
    _enter(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
