"""The isolation underneath execution.py: a bubblewrap (`bwrap`) sandbox per program, a cgroup that
bounds the program as a whole, and sandbox user ids reserved across processes.

    slot = Slot.acquire()                        # a user id no other evaluation on this machine holds
    group = Cgroup.create(slot.uid, memory_mb=1024, processes=16)   # None where the machine has none
    argv = launch(runner_argv, group=group)      # the command that starts the runner in the sandbox

The sandbox (bubblewrap, `apt-get install bubblewrap`) gives the program new user (when not
root), PID, IPC, network, UTS and mount namespaces: it sees only its own processes (each program
its own PID namespace and, as root, its own user id: no other evaluation's program to signal or
trace), no System V IPC of anyone else (and none of its own survives it), no network (a loopback
only), and of the machine's files only the system's folders (SYSTEM: /usr, /etc, ...) and the
interpreter's installation, read-only; as the only writable place a size-limited tmpfs on /tmp
(WORK_MB) whose folder WORK is its working directory, HOME and TMPDIR, holding its own files alone.
No home, no /run, /var or /work, nothing of the harness (the runner is given as source); /root
only where the interpreter lives under it, and then just the folders that lead to it. The
interpreter's site-packages are empty but for PACKAGES (numpy): a benchmark's data (HumanEval's
canonical solutions) and the harness's own packages are not there to read. An interpreter under
/tmp shows up in /tmp, never in WORK. bwrap starts the program in a
session of its own and kills it when bwrap's parent dies; when the program's first process
ends, the PID namespace ends and the kernel kills every process left in it.

As root, the runner drops to the slot's user id (no groups, no capabilities, no new privileges)
before it touches the program, and a cgroup (v2, else the v1 memory and pids controllers) bounds
memory (tmpfs and memfd pages included, no swap) and processes of the whole sandbox, with the
harness reading its counters afterwards: a limit is what was observed, not what the program
printed. Every limit the runner sets has soft = hard (address space memory_mb per process, CPU
time, file size, open files, processes), so the program cannot raise one. Without a cgroup the bounds
are per process (address space memory_mb / NO_CGROUP_PROCESSES each, at most NO_CGROUP_PROCESSES
processes), and pages held
outside an address space (memfd files, System V shared memory) escape them. Without bwrap (or
where it cannot start), `backend()` says "plain": limits and a session only, no isolation (and as
root no process bound: root is exempt from RLIMIT_NPROC).
"""
import fcntl
import importlib.util
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time

UID_BASE = 61000  # sandbox user ids UID_BASE + slot: unused by any account on a normal system
SLOTS = 256
SLOT_DIR = "/run/ddpt-sandbox"  # root only; lock files that reserve user ids across processes
WORK_MB = 64  # the tmpfs on /tmp: everything the program may write
WORK = "/tmp/ddpt-program"  # its working directory inside that tmpfs, beside any interpreter folder bound under /tmp
NO_CGROUP_PROCESSES = 4


class Slot:
    """A sandbox user id held through an exclusive lock on its file: another process (a second
    sample.py, the tests beside a run) gets another one, and the kernel frees it if we die."""

    def __init__(self, uid, lock):
        self.uid, self.lock = uid, lock

    @classmethod
    def acquire(cls, wait=60.0):
        os.makedirs(SLOT_DIR, mode=0o700, exist_ok=True)
        if os.stat(SLOT_DIR).st_uid != 0:
            raise RuntimeError(f"{SLOT_DIR} is not owned by root: remove it and run again")
        deadline = time.monotonic() + wait
        while True:
            for uid in range(UID_BASE, UID_BASE + SLOTS):
                lock = open(os.path.join(SLOT_DIR, f"{uid}.lock"), "a")
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return cls(uid, lock)
                except BlockingIOError:
                    lock.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"all {SLOTS} sandbox user ids are in use: wait for other evaluations to end")
            time.sleep(0.05)

    def release(self):
        self.lock.close()


class Cgroup:
    """One program's cgroup: memory (no swap) and process bounds, the counters that say whether
    they were hit, and a kill of everything in it."""

    def __init__(self, dirs, files):
        self.dirs, self.files = dirs, files  # files: role -> path

    @classmethod
    def create(cls, name, memory_mb, processes):
        """None where this machine gives us no cgroup to write (not root, or no controllers)."""
        if os.geteuid() != 0:
            return None
        limit = str(memory_mb * 2 ** 20)
        v2 = _v2_parent()
        try:
            if v2:
                d = os.path.join(v2, f"ddpt-{name}")
                _fresh(d)
                for f, v in (("memory.max", limit), ("memory.swap.max", "0"), ("pids.max", str(processes))):
                    if os.path.exists(os.path.join(d, f)):
                        _write(os.path.join(d, f), v)
                return cls([d], {"procs": [f"{d}/cgroup.procs"], "memory": f"{d}/memory.events",
                                 "pids": f"{d}/pids.events", "kill": f"{d}/cgroup.kill"})
            mem, pids = (f"/sys/fs/cgroup/{c}/ddpt-{name}" for c in ("memory", "pids"))
            if not (os.path.isdir(os.path.dirname(mem)) and os.path.isdir(os.path.dirname(pids))):
                return None
            for d in (mem, pids):
                _fresh(d)
            _write(f"{mem}/memory.limit_in_bytes", limit)
            if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):  # memory + swap: no swap
                _write(f"{mem}/memory.memsw.limit_in_bytes", limit)
            _write(f"{pids}/pids.max", str(processes))
            return cls([mem, pids], {"procs": [f"{mem}/cgroup.procs", f"{pids}/cgroup.procs"],
                                     "memory": f"{mem}/memory.oom_control", "pids": f"{pids}/pids.events"})
        except OSError:
            return None

    def events(self):
        """{"memory": OOM kills, "processes": forks refused at the bound}."""
        def count(path, key):
            for line in open(path).read().splitlines():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
            return 0
        return {"memory": count(self.files["memory"], "oom_kill"), "processes": count(self.files["pids"], "max")}

    def kill(self):
        """SIGKILL every process in the cgroup until none is left."""
        for _ in range(200):
            pids = {p for f in self.files["procs"] for p in open(f).read().split()}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    def remove(self):
        self.kill()
        for d in self.dirs:
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last processes exit
                    time.sleep(0.005)


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def _fresh(d):
    if os.path.isdir(d):  # left by a harness that was killed: its processes go with it
        Cgroup([d], {"procs": [f"{d}/cgroup.procs"]}).remove()
    os.mkdir(d)


def _v2_parent():
    """A cgroup v2 folder whose children get the memory and pids controllers, or None."""
    root = "/sys/fs/cgroup"
    if not os.path.exists(f"{root}/cgroup.subtree_control"):
        return None  # v1 or hybrid: /sys/fs/cgroup/unified carries no controllers
    try:
        have = open(f"{root}/cgroup.subtree_control").read().split()
        if not {"memory", "pids"} <= set(have):
            _write(f"{root}/cgroup.subtree_control", "+memory +pids")  # fails where our cgroup holds processes
        return root
    except OSError:
        return None


_BACKEND = {}


def backend():
    """"bwrap" where bubblewrap is installed and can start a sandbox here, else "plain"."""
    if "name" not in _BACKEND:
        bwrap = shutil.which("bwrap")
        ok = bwrap and subprocess.run(launch(["/bin/true"], group=None, work_mb=1), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0
        _BACKEND["name"] = "bwrap" if ok else "plain"
        if not ok:
            print("execution: no bubblewrap sandbox on this machine (apt-get install bubblewrap): generated "
                  "programs run with resource limits only, not isolated", file=sys.stderr)
    return _BACKEND["name"]


PACKAGES = ("numpy",)  # what a generated program may import beyond the standard library (bound read-only)
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")  # the system, read-only


def site_folders():
    """The interpreter's package folders (site-packages): hidden inside the sandbox, but for PACKAGES."""
    found = set(site.getsitepackages()) | {site.getusersitepackages()} | set(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    found |= {p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    return sorted({os.path.realpath(p) for p in found})


def python_paths():
    """(folders to bind, folders to hide, package folders to bind back into those): the interpreter's
    installation (its prefixes: binary, libpython, standard library), without its site-packages, where
    a benchmark's data (HumanEval's solutions) and the harness's own packages live; then PACKAGES."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    paths = sorted(os.path.realpath(p) for p in paths)
    paths = [p for i, p in enumerate(paths) if not any(p.startswith(q + "/") for q in paths[:i])]
    hide = [d for d in site_folders() if os.path.isdir(d) and any(d == p or d.startswith(p + "/") for p in paths + list(SYSTEM))]
    back = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folder = os.path.realpath(list(spec.submodule_search_locations)[0])
            back += [f for f in (folder, folder + ".libs") if os.path.isdir(f)]  # (.libs: a wheel's own shared libraries)
    return paths, hide, back


def _bind_into(argv, path, under):
    """--ro-bind path, with the folders between `under` (a tmpfs) and it made traversable."""
    parts = path[len(under) + 1:].split("/")
    for i in range(1, len(parts)):
        argv += ["--perms", "0755", "--dir", "/".join([under] + parts[:i])]
    argv += ["--ro-bind", path, path]


def launch(command, group, work_mb=WORK_MB):
    """argv that runs `command` in the sandbox (bwrap as root: no user namespace, so that the
    runner can drop to the slot's user id; otherwise a user namespace), in `group`'s cgroup. The
    sandbox's file system is the system's folders (SYSTEM), the interpreter (`python_paths`), /proc,
    /dev and a tmpfs on /tmp: no home, no /root but the folders that lead to the interpreter, no /run,
    no /work, none of the harness's files or packages."""
    argv = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    if os.geteuid() != 0:
        argv[1:1] = ["--unshare-user"]
    for d in SYSTEM:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--perms", "1777", "--size", str(work_mb * 2 ** 20), "--tmpfs", "/tmp"]
    paths, hide, back = python_paths()
    made = set()  # the tmpfs folders made to hold bound paths, read-only once all are in
    for p in paths:
        top = "/" + p.split("/")[1]
        if any(p == d or p.startswith(d + "/") for d in SYSTEM):
            continue  # bound with the system already
        if p == top:
            argv += ["--ro-bind", p, p]
            continue
        if top not in made and top != "/tmp":  # under /root, /home, /opt...: only the path to it is shown
            argv += ["--tmpfs", top]
            made.add(top)
        _bind_into(argv, p, top)  # (an interpreter under /tmp shows up in /tmp, never in WORK)
    for d in hide:
        argv += ["--tmpfs", d]
        for f in back:
            if f.startswith(d + "/"):
                _bind_into(argv, f, d)
        argv += ["--remount-ro", d]
    for top in sorted(made) + ["/dev/shm"]:
        argv += ["--remount-ro", top]
    argv += ["--perms", "1777", "--dir", WORK, "--chdir", WORK, "--setenv", "HOME", WORK, "--setenv", "TMPDIR", WORK,
             "--"] + list(command)
    if group:  # a shell joins the cgroup, then becomes bwrap: the sandbox is born inside it
        join = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; shift; exec "$@"'
        argv = ["/bin/sh", "-c", join, "sh", *group.files["procs"], "--", *argv]
    return argv
