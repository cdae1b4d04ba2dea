"""The first process inside the sandbox (sandbox.py): it runs the candidate, then the tests, and
only it can say that they passed. Never imported; run as `python -I -c <this source> UID FD CPU AS NPROC`
(the sandbox holds no file of the harness).

Its stdin brings {"nonce", "code", "test"} as JSON; it reads all of it and closes stdin before any
candidate code runs. Then, as the sandbox user (UID, or "-" to stay who it is) under the limits:

    exec(code)  as module __main__, from ./program.py, which holds the candidate and nothing else
    exec(test)  in a copy of that namespace with fresh builtins, asserts compiled in (optimize=0)
    report      "<nonce> passed <sha256 of result>" on file descriptor FD, then os._exit(0) at once

`result` is whatever the tests leave in that name (None, or a tuple of strings such as the demo's
observation). Any exception, SystemExit included, is reported as failed with its line. Exiting
early (os._exit, a signal, atexit, an excepthook, exec under -O) leaves no report, and a forked
child never reports (its pid is not the runner's): the harness counts a missing report as a
failure. The nonce is never in the candidate's file or namespace; code that searches the runner's
frames or memory could find it (see execution.py's docstring for what an in-process test cannot
make safe)."""
import builtins
import hashlib
import json
import os
import resource
import signal
import sys
import types


def main(uid, fd, cpu, address_space, processes):
    spec = json.loads(sys.stdin.buffer.read())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    nonce, code, test = spec["nonce"], spec["code"], spec["test"]
    del spec
    if uid != "-":  # root inside bwrap: become the slot's user; setuid clears every capability
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))
    limits = [(resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, 16 * 2 ** 20), (resource.RLIMIT_NOFILE, 64),
              (resource.RLIMIT_NPROC, processes), (resource.RLIMIT_CORE, 0)]
    if address_space:  # per process (the cgroup, where there is one, bounds the whole program)
        limits.append((resource.RLIMIT_AS, address_space))
    for limit, value in limits:
        resource.setrlimit(limit, (value, value))  # soft = hard: nothing can be raised, as the user has no capability
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # a file past its limit kills: the harness sees the signal
    with open("program.py", "w", encoding="utf-8") as f:
        f.write(code)
    # what the report needs, taken before the candidate can replace it
    pid, write, exit_, sha256, fresh = os.getpid(), os.write, os._exit, hashlib.sha256, dict(vars(builtins))
    main_module = types.ModuleType("__main__")
    main_module.__file__, main_module.__builtins__ = os.path.abspath("program.py"), builtins
    sys.modules["__main__"], sys.argv = main_module, ["program.py"]
    try:
        exec(compile(code, "program.py", "exec", dont_inherit=True, optimize=0), main_module.__dict__)
        ns = dict(main_module.__dict__)
        ns["__builtins__"] = dict(fresh)
        ns.pop("result", None)  # the tests' own result, not a name the candidate happened to define
        exec(compile(test, "<tests>", "exec", dont_inherit=True, optimize=0), ns)
        result = ns.get("result")
        if not (result is None or (type(result) is tuple and all(type(s) is str for s in result))):
            raise TypeError("the tests' result is not None or a tuple of strings")
    except BaseException as e:  # noqa: BLE001 -- SystemExit is a failure like any other
        line, kind = _describe(e)
        if os.getpid() == pid:
            write(fd, f"{nonce} failed {kind}\t{line}\n".encode("utf-8", "replace"))
        exit_(1)
    if os.getpid() == pid:
        digest = sha256("\x00".join(result or ()).encode("utf-8", "surrogatepass")).hexdigest()
        preview = repr(result)[:300].replace("\t", " ").replace("\n", " ") if result else ""
        write(fd, f"{nonce} passed {digest}\t{preview}\n".encode("utf-8", "replace"))
    exit_(0)


def _describe(e):
    """The exception's own line, and whether it is a limit the runner saw being hit: memory, the
    working directory full, no process left to fork."""
    try:
        text = str(e).splitlines()[0] if str(e) else ""
    except BaseException:  # noqa: BLE001 -- a __str__ that raises
        text = "<unprintable>"
    line = f"{type(e).__name__}: {text}" if text else type(e).__name__
    limit = isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno in (28, 11))  # ENOSPC, EAGAIN
    return line.replace("\t", " ")[:500], "limit" if limit else "error"


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:6]))
