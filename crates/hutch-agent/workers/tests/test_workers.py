"""Protocol tests of the interpreter workers.

Each test starts a worker exactly as the agent does: `python3 -S /proc/self/fd/5`,
`node --preserve-symlinks-main /proc/self/fd/5` or `bash --noprofile --norc /proc/self/fd/5`
with fd 5 = the worker's source in a sealed memfd (python: its start, `python_boot.py`, and fd 6
= the worker's code, `python_worker.py`), fd 0 = /dev/null, fds 1/2 = pipes, fd 3 =
control in, fd 4 = control out, in its own process group, with every signal's default
disposition and an empty signal mask (whatever the runner inherited, as `nohup` or `&` give). Run from the repository root:

    /usr/bin/python3 -m unittest discover -s crates/hutch-agent/workers/tests -v
"""

import base64
import fcntl
import json
import marshal
import os
import posix
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

WORKERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
NODE = "/usr/bin/node" if os.path.exists("/usr/bin/node") else shutil.which("node")
BASH = shutil.which("bash")


def _read(name):
    with open(os.path.join(WORKERS, name)) as f:
        return f.read()


SOURCE_PATH = "/proc/self/fd/5"


def _sealed(name, data):
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _sealed_source(name):
    """The worker's source in a memfd sealed against every change, as the agent serves it."""
    return _sealed(name, _read(name).encode())


def _start_line():
    """python_start.py as the agent passes it to `python3 -c`: its one line."""
    return _read("python_start.py").rstrip("\n")


def _compiled(code="python_worker.py"):
    """python_compile.py's output for `code`, as the server makes it for every sandbox."""
    return subprocess.run(
        [PYTHON, "-I", "-S", "-c", _read("python_compile.py")],
        input=_read(code).encode(), capture_output=True, check=True,
    ).stdout


def _importable(module):
    r = subprocess.run([PYTHON, "-c", "import " + module], capture_output=True)
    return r.returncode == 0


HAVE_IPYTHON = _importable("IPython")
HAVE_PANDAS = _importable("pandas")
HAVE_MPL = _importable("matplotlib")


def _default_signals():
    """Every signal's default disposition and an empty mask, as the agent gives a process."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # reserved by the C library


class Worker:
    """One worker process and its pipes."""

    def __init__(self, language, kernel=None, env=None, cwd=None, data_limit=None, compiled=None):
        """`data_limit`: RLIMIT_DATA in bytes, as the agent enforces a context's `memoryMb`.
        `compiled` (python): the worker's code compiled ahead (see `_compiled`), run as the
        agent runs it when the server made it: `python3 -S -c <python_start.py>`."""
        code = None
        if compiled is not None:
            source = _sealed("hutch-python-worker-compiled", compiled)
            argv = [PYTHON, "-S", "-c", _start_line()]
        elif language == "python":
            source = _sealed_source("python_boot.py")
            code = _sealed_source("python_worker.py")
            # as the agent runs it: no `site` at startup, the worker adds site-packages itself
            argv = [PYTHON, "-S", SOURCE_PATH]
        elif language == "javascript":
            source = _sealed_source("node_worker.js")
            argv = [NODE, "--preserve-symlinks-main", SOURCE_PATH]
        else:
            source = _sealed_source("bash_worker.sh")
            argv = [BASH, "--noprofile", "--norc", SOURCE_PATH]
        e = dict(os.environ if env is None else env)
        if language == "python" and compiled is None and "PYTHONSAFEPATH" not in e:  # as the agent adds it
            e.update(PYTHONSAFEPATH="1", HUTCH_SAFE_PATH="1")
        if kernel:
            e["HUTCH_KERNEL"] = kernel
        ctl_in_r, self.ctl_in = os.pipe()
        self.ctl_out, ctl_out_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        # Park the child's ends above 3/4 so the dup2 in the child cannot clobber them.
        hi_r = fcntl.fcntl(ctl_in_r, fcntl.F_DUPFD_CLOEXEC, 20)
        hi_w = fcntl.fcntl(ctl_out_w, fcntl.F_DUPFD_CLOEXEC, 20)
        hi_src = fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, 20)
        hi_code = None if code is None else fcntl.fcntl(code, fcntl.F_DUPFD_CLOEXEC, 20)

        def child():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)
            os.dup2(hi_src, 5)
            if hi_code is not None:
                os.dup2(hi_code, 6)
            os.setpgid(0, 0)
            _default_signals()
            if data_limit is not None:
                resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))

        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            pass_fds=(3, 4, 5) if code is None else (3, 4, 5, 6),
            preexec_fn=child,
            env=e,
            cwd=cwd,
        )
        for fd in (ctl_in_r, ctl_out_w, out_w, err_w, hi_r, hi_w, hi_src, source, hi_code, code):
            if fd is not None:
                os.close(fd)
        self.out_fd, self.err_fd = out_r, err_r
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._buf = bytearray()
        self._msgs = []
        self._eof = False
        self.sel = selectors.DefaultSelector()
        for fd in (self.ctl_out, out_r, err_r):
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        self.ready = self.next_message(timeout=30)
        self.ready_ms = (time.perf_counter() - t0) * 1000

    def _pump(self, timeout):
        for key, _ in self.sel.select(timeout):
            fd = key.fd
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                self.sel.unregister(fd)
                if fd == self.ctl_out:
                    self._eof = True
                continue
            if fd == self.out_fd:
                self.stdout += data
            elif fd == self.err_fd:
                self.stderr += data
            else:
                self._buf += data
                while b"\n" in self._buf:
                    line, _, rest = bytes(self._buf).partition(b"\n")
                    self._buf = bytearray(rest)
                    self._msgs.append(json.loads(line))

    def drain(self):
        """Reads what the worker already wrote to fds 1/2."""
        for fd, acc in ((self.out_fd, self.stdout), (self.err_fd, self.stderr)):
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                acc += data

    def next_message(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self._msgs:
            if self._eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the worker")
            self._pump(min(left, 0.5))
        return self._msgs.pop(0)

    def send(self, code, envs=None, id=1, sort_keys=False):
        msg = {"type": "execute", "id": id, "code": code}
        if envs is not None:
            msg["envs"] = envs
        # raw UTF-8 and compact separators, as the agent (serde_json) sends them; its keys
        # come sorted (`serde_json::json!` without `preserve_order`) with `sort_keys`
        line = json.dumps(msg, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
        os.write(self.ctl_in, (line + "\n").encode())

    def collect(self, timeout=20):
        """Messages up to and including `done` (or None at the end: the worker exited)."""
        msgs = []
        while True:
            m = self.next_message(timeout)
            if m is None:
                return msgs
            msgs.append(m)
            if m["type"] == "done":
                self.drain()
                return msgs

    def run(self, code, envs=None, timeout=20):
        self.stdout.clear()
        self.stderr.clear()
        self.send(code, envs)
        return self.collect(timeout)

    def interrupt(self):
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait_exit(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._pump(0.5)
        return self.proc.wait(max(1, deadline - time.monotonic()))

    def close(self):
        try:
            os.close(self.ctl_in)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.sel.close()
        for fd in (self.ctl_out, self.out_fd, self.err_fd):
            os.close(fd)


def by_type(msgs, t):
    return [m for m in msgs if m["type"] == t]


def done(msgs):
    assert msgs and msgs[-1]["type"] == "done", msgs
    return msgs[-1]


def interrupt_after(worker, seconds):
    t = threading.Timer(seconds, worker.interrupt)
    t.start()
    return t


class PlainPythonTest(unittest.TestCase):
    """The plain CPython kernel (HUTCH_KERNEL=python)."""

    @classmethod
    def setUpClass(cls):
        cls.w = Worker("python", kernel="python")

    @classmethod
    def tearDownClass(cls):
        cls.w.close()

    def test_ready_names_the_kernel_and_hides_the_selector(self):
        self.assertEqual(self.w.ready["type"], "ready")
        self.assertEqual(self.w.ready["language"], "python")
        self.assertEqual(self.w.ready["kernel"], "python")
        self.assertEqual(self.w.ready["pid"], self.w.proc.pid)
        msgs = self.w.run("import os\n'HUTCH_KERNEL' in os.environ")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "False")

    def test_the_start_leaves_no_child_behind(self):
        # The worker's code was compiled in a forked child (`_compile_apart` of python_boot.py),
        # which was reaped.
        # A worker of its own: the shared one may hold children other tests started.
        fresh = Worker("python", kernel="python")
        try:
            msgs = fresh.run(
                "import os\nopen('/proc/%d/task/%d/children' % (os.getpid(), os.getpid())).read()"
            )
        finally:
            fresh.close()
        [res] = by_type(msgs, "result")
        self.assertEqual(res["data"]["text/plain"], "''")

    def test_last_expression_is_the_result_and_state_persists(self):
        self.assertEqual(done(self.w.run("x = 6 * 7"))["status"], "ok")
        msgs = self.w.run("y = x\ny")
        [res] = by_type(msgs, "result")
        self.assertEqual(res["data"], {"text/plain": "42"})
        self.assertEqual(res["executionCount"], done(msgs)["executionCount"])
        self.assertEqual(by_type(self.w.run("x;"), "result"), [])  # `;` suppresses
        self.assertEqual(by_type(self.w.run("print('no result')"), "result"), [])

    def test_output_of_print_subprocesses_and_c_goes_to_fds_1_and_2(self):
        msgs = self.w.run(
            "import os, sys\nprint('from print')\nsys.stderr.write('from stderr\\n')\n"
            "os.system('echo from a subprocess')\n"
            "import ctypes\nctypes.CDLL(None).printf(b'from C\\n')\nNone"
        )
        self.assertEqual(done(msgs)["status"], "ok")
        out = self.w.stdout.decode()
        self.assertIn("from print\n", out)
        self.assertIn("from a subprocess\n", out)
        self.assertIn("from C\n", out)  # libc's buffer is flushed before done
        self.assertIn("from stderr\n", self.w.stderr.decode())

    def test_traceback_shows_the_source_line_and_no_worker_frames(self):
        self.w.run("def boom(n):\n    return n / 0\n")
        msgs = self.w.run("value = 1\nboom(value)")
        [err] = by_type(msgs, "error")
        self.assertEqual(err["name"], "ZeroDivisionError")
        self.assertEqual(err["value"], "division by zero")
        self.assertIn("return n / 0", err["traceback"])
        self.assertIn("boom(value)", err["traceback"])
        self.assertRegex(err["traceback"], r'File "<cell-\d+>", line 2, in boom')
        self.assertNotIn('File "<string>"', err["traceback"])
        self.assertNotIn("hutch-worker", err["traceback"])
        self.assertEqual(done(msgs)["status"], "error")

    def test_unicode(self):
        msgs = self.w.run("print('h\u00e9llo \U0001f600')\n'\u2713'")
        self.assertEqual(self.w.stdout.decode(), "h\u00e9llo \U0001f600\n")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "'\u2713'")

    def test_syntax_error(self):
        msgs = self.w.run("def (:")
        [err] = by_type(msgs, "error")
        self.assertEqual(err["name"], "SyntaxError")
        self.assertIn("def (:", err["traceback"])

    def test_envs_apply_to_one_execution_and_are_restored(self):
        os_env = "import os\n"
        self.w.run(os_env + "os.environ['HUTCH_KEEP'] = 'before'")
        msgs = self.w.run(
            os_env + "(os.environ.get('HUTCH_NEW'), os.environ.get('HUTCH_KEEP'), "
            "os.popen('echo $HUTCH_NEW').read().strip())",
            envs={"HUTCH_NEW": "new", "HUTCH_KEEP": "during"},
        )
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "('new', 'during', 'new')")
        msgs = self.w.run(os_env + "(os.environ.get('HUTCH_NEW'), os.environ.get('HUTCH_KEEP'))")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "(None, 'before')")

    def test_sigint_interrupts_and_keeps_state(self):
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("kept = 5\nwhile True:\n    pass")
        t.join()
        [err] = by_type(msgs, "error")
        self.assertEqual(err["name"], "KeyboardInterrupt")
        self.assertIn("while True", err["traceback"])
        self.assertEqual(done(msgs)["status"], "interrupted")
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("import time\ntime.sleep(100)")
        t.join()
        self.assertEqual(done(msgs)["status"], "interrupted")
        self.assertEqual(by_type(self.w.run("kept"), "result")[0]["data"]["text/plain"], "5")

    def test_a_raised_keyboardinterrupt_is_an_ordinary_error(self):
        msgs = self.w.run("raise KeyboardInterrupt")
        self.assertEqual(by_type(msgs, "error")[0]["name"], "KeyboardInterrupt")
        self.assertEqual(done(msgs)["status"], "error")

    def test_rich_mime_from_repr_methods_and_display(self):
        code = (
            "class Rich:\n"
            "    def __repr__(self): return 'Rich()'\n"
            "    def _repr_html_(self): return '<b>rich</b>'\n"
            "    def _repr_png_(self): return b'\\x89PNG'\n"
            "display(Rich(), 7)\n"
            "Rich()"
        )
        msgs = self.w.run(code)
        results = by_type(msgs, "result")
        self.assertEqual(len(results), 3)
        self.assertEqual(results[1]["data"], {"text/plain": "7"})
        data = results[2]["data"]
        self.assertEqual(data["text/plain"], "Rich()")
        self.assertEqual(data["text/html"], "<b>rich</b>")
        self.assertEqual(base64.b64decode(data["image/png"]), b"\x89PNG")

    @unittest.skipUnless(HAVE_PANDAS, "pandas is not installed")
    def test_dataframe_is_html(self):
        msgs = self.w.run("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
        data = by_type(msgs, "result")[0]["data"]
        self.assertIn("<table", data["text/html"])
        self.assertIn("a", data["text/plain"])

    @unittest.skipUnless(HAVE_MPL, "matplotlib is not installed")
    def test_matplotlib_figures_become_png_artifacts(self):
        msgs = self.w.run(
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n"
            "plt.figure()\nplt.plot([3, 2, 1])\nNone"
        )
        arts = by_type(msgs, "artifact")
        self.assertEqual([a["name"] for a in arts], ["figure-1.png", "figure-2.png"])
        for a in arts:
            self.assertEqual(a["mimeType"], "image/png")
            self.assertTrue(base64.b64decode(a["data"]).startswith(b"\x89PNG"))
        # closed after being sent
        self.assertEqual(by_type(self.w.run("plt.get_fignums()"), "result")[0]["data"]["text/plain"], "[]")

    def test_top_level_await(self):
        msgs = self.w.run("import asyncio\nawait asyncio.sleep(0.01)\n40 + 2")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "42")

    def test_big_output_does_not_stall(self):
        t = time.monotonic()
        msgs = self.w.run("print('a' * 2_000_000)\nimport sys\nsys.stderr.write('e' * 1_000_000)\nNone", timeout=30)
        self.assertEqual(done(msgs)["status"], "ok")
        self.assertEqual(len(self.w.stdout), 2_000_001)
        self.assertEqual(len(self.w.stderr), 1_000_000)
        self.assertLess(time.monotonic() - t, 10)

    def test_control_fds_are_not_inherited(self):
        self.w.run("import os\nos.system('sh -c \"ls /proc/\\\\$\\\\$/fd\"')")
        fds = self.w.stdout.decode().split()
        self.assertIn("1", fds)
        self.assertNotIn("3", fds)
        self.assertNotIn("4", fds)

    @unittest.skipUnless(HAVE_IPYTHON, "IPython is not installed")
    def test_ipythons_display_sends_results_as_display_does(self):
        # Without an IPython shell, IPython's display() prints `<IPython.core.display.HTML
        # object>`: the common `from IPython.display import display, HTML` gets the plain
        # kernel's display() instead, under each name IPython gives it.
        for kernel in ("python", "auto"):
            w = Worker("python", kernel=kernel)
            try:
                msgs = w.run("from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))")
                self.assertEqual(w.stdout.decode(), "")
                [html] = [r["data"] for r in by_type(msgs, "result")]
                self.assertEqual(html["text/html"], "<b>x</b>")
                msgs = w.run(
                    "from IPython.display import JSON, Markdown, clear_output\n"
                    "handle = display(JSON({'a': 1}), display_id=True)\n"
                    "handle.update(Markdown('*m*'))\n"
                    "clear_output()\n"
                    "import warnings, IPython.core.display as d, IPython.core.display_functions as f\n"
                    "warnings.simplefilter('ignore')\n"
                    "d.display is display and f.display is display"
                )
                self.assertEqual(done(msgs)["status"], "ok", msgs)
                self.assertEqual(w.stdout.decode(), "")
                js, md, same = [r["data"] for r in by_type(msgs, "result")]
                self.assertEqual(js["application/json"], {"a": 1})
                self.assertEqual(md["text/markdown"], "*m*")
                self.assertEqual(same["text/plain"], "True")
                if kernel == "auto":
                    # switched to IPython, its display() is IPython's own
                    self.assertEqual(done(w.run("%pwd"))["kernel"], "ipython")
                    msgs = w.run("display(HTML('<i>y</i>'))")
                    self.assertEqual(by_type(msgs, "result")[0]["data"]["text/html"], "<i>y</i>")
                    self.assertEqual(w.stdout.decode(), "")
            finally:
                w.close()

    def test_a_forked_child_does_not_speak_the_protocol(self):
        msgs = self.w.run("import os\npid = os.fork()\nif pid == 0:\n    print('child')\nelse:\n    os.waitpid(pid, 0)\n")
        self.assertEqual(len(by_type(msgs, "done")), 1)
        self.assertEqual(by_type(self.w.run("1"), "result")[0]["data"]["text/plain"], "1")


class CompiledPlainPythonTest(PlainPythonTest):
    """The same, for a worker started from code compiled ahead (as the server makes it for the
    `default` image's interpreter)."""

    @classmethod
    def setUpClass(cls):
        cls.w = Worker("python", kernel="python", compiled=_compiled())


class StartTest(unittest.TestCase):
    """How a worker is started: a short command line, its source on a sealed descriptor that
    the worker closes, and for the user's code the view `python3 -c` / `node -e` gives."""

    def cmdline(self, w):
        with open("/proc/%d/cmdline" % w.proc.pid, "rb") as f:
            return f.read().split(b"\0")[:-1]

    def source_fds(self, w):
        """The worker's descriptors that still name its source (bash's own script fd aside)."""
        fds = []
        for fd in os.listdir("/proc/%d/fd" % w.proc.pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (w.proc.pid, fd))
            except OSError:
                continue
            if target.startswith("/memfd:") and fd != "255":
                fds.append(fd)
        return fds

    def test_python(self):
        # From the source, and from code compiled ahead (python_start.py on the command line).
        for compiled, argv in [(None, [SOURCE_PATH]), (_compiled(), ["-c", _start_line()])]:
            w = Worker("python", kernel="python", compiled=compiled)
            try:
                self.assertEqual(self.cmdline(w), [PYTHON.encode(), b"-S"] + [a.encode() for a in argv])
                self.assertEqual(self.source_fds(w), [])
                msgs = w.run("import sys\n(sys.argv, sys.path[0], '__file__' in globals())")
                self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "(['-c'], '', False)")
            finally:
                w.close()

    def test_python_with_a_safe_path_of_the_agent_and_of_the_user(self):
        # The agent adds PYTHONSAFEPATH (and HUTCH_SAFE_PATH, saying so): neither is seen by
        # user code or its processes, and sys.path starts with "" as `python3 -c`'s does. A
        # value of the user's own stays, with its meaning: nothing put first on sys.path.
        probe = (
            "import os, sys\n"
            "(os.environ.get('PYTHONSAFEPATH'), 'HUTCH_SAFE_PATH' in os.environ, sys.path[0] == '',"
            " os.system('test -z \"$PYTHONSAFEPATH$HUTCH_SAFE_PATH\"') == 0)"
        )
        for env, expected in [(None, "(None, False, True, True)"), ({"PYTHONSAFEPATH": "1"}, "('1', False, False, False)")]:
            w = Worker("python", kernel="python", env=None if env is None else dict(os.environ, **env))
            try:
                [res] = by_type(w.run(probe), "result")
            finally:
                w.close()
            self.assertEqual(res["data"]["text/plain"], expected)

    def test_code_compiled_by_another_interpreter_is_not_run(self):
        # Another magic number: the start exits 76 (the agent then starts the worker from its
        # source) before it unmarshals anything.
        compiled = _compiled()
        other = bytes([compiled[0] ^ 1]) + compiled[1:4] + marshal.dumps(compile("print('ran')", "<x>", "exec"))
        fd = _sealed("other", other)
        try:
            hi = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 20)
            r = subprocess.run(
                [PYTHON, "-S", "-c", _start_line()],
                capture_output=True, pass_fds=(5,), preexec_fn=lambda: os.dup2(hi, 5), timeout=30,
            )
        finally:
            os.close(fd)
            os.close(hi)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (76, b"", b""))

    def test_node(self):
        w = Worker("javascript")
        try:
            self.assertEqual(self.cmdline(w), [NODE.encode(), b"--preserve-symlinks-main", SOURCE_PATH.encode()])
            self.assertEqual(self.source_fds(w), [])
            msgs = w.run("process.argv.length")
            self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "1")
        finally:
            w.close()

    def test_bash(self):
        w = Worker("bash")
        try:
            self.assertEqual(self.cmdline(w), [BASH.encode(), b"--noprofile", b"--norc", SOURCE_PATH.encode()])
            self.assertEqual(self.source_fds(w), [])
        finally:
            w.close()


class PythonBootTest(unittest.TestCase):
    """python_boot.py's `_compile_apart`, called here on a file of code."""

    def compile_apart(self, code, fork=None):
        boot = _read("python_boot.py")
        ns = {}
        exec(boot[: boot.rindex("exec(")], ns)  # the definitions, not the start of a worker
        here = []  # compile calls of this process (the child's are its own)
        ns["compile"] = lambda *a: here.append(a) or compile(*a)
        fd = os.memfd_create("code")
        os.write(fd, code.encode())  # the offset is now at the end: the start must pread
        real_fork = posix.fork  # what the start calls (it imports `posix`, not `os`)
        if fork is not None:
            posix.fork = fork
        try:
            compiled = ns["_compile_apart"](fd, "<test>")
        finally:
            posix.fork = real_fork
        with self.assertRaises(OSError, msg="the descriptor is closed"):
            os.fstat(fd)
        g = {}
        exec(compiled, g)
        return compiled, g, bool(here)

    def test_the_code_compiled_in_a_child_runs_here(self):
        compiled, g, here = self.compile_apart("x = 6 * 7\n" + "y = 'long line'\n" * 20000)
        self.assertFalse(here)
        self.assertEqual(compiled.co_filename, "<test>")
        self.assertEqual((g["x"], g["y"]), (42, "long line"))

    def test_when_the_child_fails_the_code_is_compiled_here(self):
        real_dumps = marshal.dumps
        marshal.dumps = None  # the child's `marshal.dumps(...)` raises; this process's never runs
        try:
            compiled, g, here = self.compile_apart("x = 6 * 7\n")
        finally:
            marshal.dumps = real_dumps
        self.assertTrue(here)
        self.assertEqual(g["x"], 42)

    def test_a_started_worker_leaves_mallocs_mmap_threshold_alone(self):
        # glibc raises its mmap threshold for good when a mapped block is freed: a worker whose
        # start did that would keep more of what the user's code frees. Started from its
        # source and from code compiled ahead (whose start reads it into a mapped buffer).
        for compiled in (None, _compiled()):
            with self.subTest(compiled=compiled is not None):
                self._check_mmap_threshold(compiled)

    def _check_mmap_threshold(self, compiled):
        w = Worker("python", kernel="python", compiled=compiled)
        try:
            code = (
                "def heap():\n"
                "    for line in open('/proc/self/maps'):\n"
                "        if line.rstrip().endswith('[heap]'):\n"
                "            a, b = line.split()[0].split('-')\n"
                "            return int(b, 16) - int(a, 16)\n"
                "before = heap(); block = bytearray(500_000); after = heap(); del block\n"
                "after - before"
            )
            [res] = by_type(w.run(code), "result")
        finally:
            w.close()
        self.assertEqual(res["data"]["text/plain"], "0", "500 KB were mapped apart, not taken from the heap")

    def test_without_a_child_the_code_is_compiled_here(self):
        def no_fork():
            raise OSError("no process to spare")

        compiled, g, here = self.compile_apart("x = 6 * 7\n", fork=no_fork)
        self.assertTrue(here)
        self.assertEqual(g["x"], 42)


class PythonExitTest(unittest.TestCase):
    def test_sys_exit_code_is_the_process_exit_code(self):
        w = Worker("python", kernel="python")
        msgs = w.run("import sys\nprint('bye', end='')\nsys.exit(3)")
        self.assertEqual(by_type(msgs, "done"), [])
        self.assertEqual(w.wait_exit(), 3)
        self.assertEqual(w.stdout.decode(), "bye")
        w.close()

    def test_exit_is_zero(self):
        w = Worker("python", kernel="python")
        w.run("exit()")
        self.assertEqual(w.wait_exit(), 0)
        w.close()

    def test_exit_with_a_message_prints_it_and_is_one(self):
        w = Worker("python", kernel="python")
        w.run("import sys\nsys.exit('fatal')")
        self.assertEqual(w.wait_exit(), 1)
        w.drain()
        self.assertIn("fatal", w.stderr.decode())
        w.close()

    @unittest.skipUnless(HAVE_IPYTHON, "IPython is not installed")
    def test_ipython_sys_exit_and_exit(self):
        w = Worker("python", kernel="ipython")
        w.run("import sys\nsys.exit(4)")
        self.assertEqual(w.wait_exit(), 4)
        w.close()
        w = Worker("python", kernel="ipython")
        w.run("exit()")
        self.assertEqual(w.wait_exit(), 0)
        w.close()


class PythonMemoryLimitTest(unittest.TestCase):
    """A context's `memoryMb` is RLIMIT_DATA: once the user's objects fill it, the worker's own
    allocations fail too. It answers every execution all the same and keeps the variables."""

    LIMIT = 64 << 20
    # Fills the memory to the last byte: 1 MiB blocks, then ever smaller ones.
    FILL = (
        "a = []\n"
        "for n in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1 << 5):\n"
        "    try:\n"
        "        while True:\n"
        "            a.append(bytearray(n))\n"
        "    except MemoryError:\n"
        "        pass\n"
    )

    def setUp(self):
        self.w = Worker("python", kernel="python", data_limit=self.LIMIT)
        self.addCleanup(self.w.close)
        [res] = by_type(self.w.run("kept = 'still here'\nkept"), "result")
        self.assertEqual(res["data"]["text/plain"], "'still here'")

    def answered(self, msgs, ok=("ok", "error")):
        """`done` ends `msgs`; an error for want of memory says what to do."""
        self.assertIsNone(self.w.proc.poll(), "the worker exited: %r" % self.w.stderr)
        self.assertIn(done(msgs)["status"], ok, msgs)
        for err in by_type(msgs, "error"):
            if err["name"] == "MemoryError" and err["value"]:
                self.assertIn("memory is used up", err["value"])
                self.assertIn("`del` big objects", err["value"])
        return msgs

    def recovers(self):
        """Once the user frees the memory, everything works and the variables are there."""
        self.answered(self.w.run("del a"), ok=("ok",))
        [res] = by_type(self.answered(self.w.run("kept"), ok=("ok",)), "result")
        self.assertEqual(res["data"]["text/plain"], "'still here'")
        self.answered(self.w.run("print(5)"), ok=("ok",))
        self.assertEqual(self.w.stdout.decode(), "5\n")
        self.assertEqual(self.w.stderr.decode(), "")

    def test_a_worker_whose_memory_is_full_answers_and_keeps_the_variables(self):
        self.answered(self.w.run(self.FILL))
        for code in ("print(5)", "kept", "1/0", "x = [0] * 100000", "display(kept)"):
            msgs = self.answered(self.w.run(code))
            if code == "1/0":
                self.assertEqual(done(msgs)["status"], "error")
                self.assertIn(by_type(msgs, "error")[0]["name"], ("ZeroDivisionError", "MemoryError"))
        self.recovers()

    def test_a_request_that_does_not_fit_is_answered_with_its_id(self):
        self.answered(self.w.run(self.FILL))
        big = "s = '%s'\nlen(s)" % ("y" * 3_000_000)
        for id, sort_keys in ((41, True), (42, False)):  # `id` after `code`, then before
            self.w.send(big, id=id, sort_keys=sort_keys)
            msgs = self.answered(self.w.collect(), ok=("error",))
            err, end = msgs
            self.assertEqual((err["name"], err["id"], end["id"]), ("MemoryError", id, id))
        self.recovers()


class SiteTest(unittest.TestCase):
    """The worker runs with `python3 -S` and adds the site-packages directories itself."""

    def test_site_packages_and_site_builtins(self):
        w = Worker("python", kernel="python")
        try:
            ref = subprocess.run(
                [PYTHON, "-c", "import sys; print([p for p in sys.path if p])"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            msgs = w.run("import sys\n[p for p in sys.path if p]")
            self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], ref)
            msgs = w.run("callable(exit) and callable(quit) and callable(help), sys.flags.no_site")
            self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "(True, 1)")
            # a python the cell starts is an ordinary one (with `site`)
            msgs = w.run(
                "import subprocess\n"
                "subprocess.run([sys.executable, '-c', 'import sys; print(sys.flags.no_site)'],"
                " capture_output=True, text=True).stdout.strip()"
            )
            self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "'0'")
        finally:
            w.close()

    @unittest.skipUnless(HAVE_PANDAS and HAVE_MPL, "pandas or matplotlib is not installed")
    def test_packages_of_the_image_import(self):
        w = Worker("python", kernel="python")
        try:
            msgs = w.run("import numpy, pandas, matplotlib, mpl_toolkits.mplot3d\n1")
            self.assertEqual(done(msgs)["status"], "ok", msgs)
        finally:
            w.close()


@unittest.skipUnless(HAVE_IPYTHON, "IPython is not installed")
class AutoKernelTest(unittest.TestCase):
    """`auto`: plain CPython until a cell needs IPython, then the IPython kernel in place."""

    def test_ordinary_python_never_switches(self):
        w = Worker("python", kernel="auto")
        try:
            self.assertEqual(w.ready["kernel"], "python")
            cells = [
                "a, b = 7, 3\nx = a % b\ny = a != b\nx, y",
                "s = '''\n%who\n!ls\nwhat?\n'''\nt = \"%d!\" % 3\nlen(s), t",
                "print('100%')  # really?",
                "z = (a\n     % b)\nz",
                "def f(v):\n    return v\nf(1 if a != b else 0)",
            ]
            for code in cells:
                msgs = w.run(code)
                self.assertEqual(done(msgs)["status"], "ok", (code, msgs))
                self.assertNotIn("kernel", done(msgs))
            # a plain syntax error stays one, without loading IPython
            msgs = w.run("x = (1,\nprint(2")
            self.assertEqual(by_type(msgs, "error")[0]["name"], "SyntaxError")
            self.assertNotIn("kernel", done(msgs))
            msgs = w.run("s = '''\n%who\n'''\nx = (")
            self.assertEqual(by_type(msgs, "error")[0]["name"], "SyntaxError")
            msgs = w.run("x = (  # why?")
            self.assertEqual(by_type(msgs, "error")[0]["name"], "SyntaxError")
            msgs = w.run("f(a=!b)")
            self.assertEqual(by_type(msgs, "error")[0]["name"], "SyntaxError")
            msgs = w.run("import sys\n'IPython' in sys.modules")
            self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "False")
        finally:
            w.close()

    def test_a_magic_switches_to_ipython_and_keeps_the_state(self):
        w = Worker("python", kernel="auto")
        try:
            w.run("alpha = 1\nbeta = 'b'\ndef gamma():\n    return alpha + 1")
            msgs = w.run("%who")
            self.assertEqual(done(msgs)["kernel"], "ipython")
            self.assertEqual(done(msgs)["executionCount"], 2)
            out = w.stdout.decode()
            for name in ("alpha", "beta", "gamma"):
                self.assertIn(name, out)
            # once switched it is the IPython kernel: no further `kernel` field
            msgs = w.run("!echo hello from the shell")
            self.assertNotIn("kernel", done(msgs))
            self.assertIn("hello from the shell", w.stdout.decode())
            msgs = w.run("gamma(), In[1].splitlines()[0]")
            [res] = by_type(msgs, "result")
            self.assertEqual(res["data"]["text/plain"], "(2, 'alpha = 1')")
            self.assertEqual(res["executionCount"], 4)
            msgs = w.run("%%timeit -n1 -r1\nsum(range(100))")
            self.assertEqual(done(msgs)["status"], "ok")
            self.assertIn("per loop", w.stdout.decode())
            msgs = w.run("%pwd")
            self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], repr(os.getcwd()))
            w.run("exit()")
            self.assertEqual(w.wait_exit(), 0)
        finally:
            w.close()

    def test_other_ipython_syntax_switches(self):
        cases = [
            ("files = !echo one\nfiles[0]", "'one'"),
            ("here = %pwd\nhere == __import__('os').getcwd()", "True"),
            ("for i in range(2):\n    !echo row$i\n1", "1"),
            ("len?", None),
        ]
        for code, expected in cases:
            w = Worker("python", kernel="auto")
            try:
                msgs = w.run(code)
                self.assertEqual(done(msgs).get("kernel"), "ipython", (code, msgs))
                self.assertEqual(done(msgs)["status"], "ok", (code, msgs))
                if expected is not None:
                    self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], expected)
            finally:
                w.close()

    def test_exit_and_sys_exit_after_the_switch(self):
        w = Worker("python", kernel="auto")
        w.run("%pwd")
        w.run("import sys\nsys.exit(5)")
        self.assertEqual(w.wait_exit(), 5)
        w.close()
        w = Worker("python", kernel="auto")
        w.run("x = 1")
        w.run("!true")
        w.run("exit()")
        self.assertEqual(w.wait_exit(), 0)
        w.close()

    def test_an_interrupt_while_ipython_loads_leaves_a_working_kernel(self):
        w = Worker("python", kernel="auto")
        try:
            w.run("kept = 3")
            t = interrupt_after(w, 0.05)
            msgs = w.run("%who")
            t.join()
            self.assertEqual(done(msgs)["kernel"], "ipython")
            self.assertIn(done(msgs)["status"], ("interrupted", "ok"))
            msgs = w.run("%who")
            self.assertIn("kept", w.stdout.decode())
            self.assertEqual(done(msgs)["executionCount"], 3)
        finally:
            w.close()

    def test_an_ipython_that_fails_to_start_exits_75_with_the_reason(self):
        # An IPython that runs out of memory while it loads (a context with a small
        # `memoryMb`): the worker exits 75 before `ready`, saying why, for the agent to start
        # a plain one.
        with tempfile.TemporaryDirectory() as d:
            os.mkdir(os.path.join(d, "IPython"))
            with open(os.path.join(d, "IPython", "__init__.py"), "w") as f:
                f.write("raise MemoryError('no room left')\n")
            w = Worker("python", kernel="ipython", env=dict(os.environ, PYTHONPATH=d))
            self.assertIsNone(w.ready)
            self.assertEqual(w.wait_exit(), 75)
            w.drain()
            self.assertEqual(w.stderr.decode(), "IPython failed to start (no room left)")
            w.close()

    def test_a_notice_from_the_agent_is_told_at_the_first_cell_only(self):
        env = dict(os.environ, HUTCH_NOTICE="hutch: told once\n")
        w = Worker("python", kernel="python", env=env)
        try:
            msgs = w.run("import os\nprint('HUTCH_NOTICE' in os.environ)")
            self.assertEqual(done(msgs)["status"], "ok")
            self.assertEqual(w.stdout.decode(), "False\n")
            self.assertEqual(w.stderr.decode(), "hutch: told once\n")
            w.run("1")
            self.assertEqual(w.stderr.decode(), "")
        finally:
            w.close()

    def test_python_kernel_never_switches(self):
        w = Worker("python", kernel="python")
        try:
            msgs = w.run("%who")
            self.assertEqual(by_type(msgs, "error")[0]["name"], "SyntaxError")
            self.assertNotIn("kernel", done(msgs))
        finally:
            w.close()


@unittest.skipUnless(HAVE_IPYTHON, "IPython is not installed")
class IPythonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = Worker("python", kernel="ipython")

    @classmethod
    def tearDownClass(cls):
        cls.w.close()

    def test_ready(self):
        self.assertEqual(self.w.ready["kernel"], "ipython")

    def test_magics_and_shell_commands(self):
        self.w.run("alpha = 1\nbeta = 'b'")
        self.w.run("%who")
        self.assertIn("alpha", self.w.stdout.decode())
        self.assertIn("beta", self.w.stdout.decode())
        msgs = self.w.run("%pwd")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], repr(os.getcwd()))
        self.w.run("!echo hello from the shell")
        self.assertIn("hello from the shell", self.w.stdout.decode())
        msgs = self.w.run("%%timeit -n1 -r1\nsum(range(100))")
        self.assertEqual(done(msgs)["status"], "ok")
        self.assertIn("per loop", self.w.stdout.decode())
        self.w.run("%reset -f")
        self.assertEqual(by_type(self.w.run("alpha"), "error")[0]["name"], "NameError")

    def test_result_error_and_execution_count(self):
        msgs = self.w.run("21 * 2")
        [res] = by_type(msgs, "result")
        self.assertEqual(res["data"]["text/plain"], "42")
        self.assertEqual(res["executionCount"], done(msgs)["executionCount"])
        self.w.run("def boom():\n    return 1 / 0\n")
        msgs = self.w.run("boom()")
        [err] = by_type(msgs, "error")
        self.assertEqual(err["name"], "ZeroDivisionError")
        self.assertIn("return 1 / 0", err["traceback"])
        self.assertNotIn("\x1b[", err["traceback"])  # no colours
        self.assertEqual(done(msgs)["status"], "error")

    @unittest.skipUnless(HAVE_PANDAS, "pandas is not installed")
    def test_dataframe_and_display(self):
        msgs = self.w.run("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\ndisplay(df)\ndf")
        results = by_type(msgs, "result")
        self.assertEqual(len(results), 2)
        for r in results:
            self.assertIn("<table", r["data"]["text/html"])

    @unittest.skipUnless(HAVE_MPL, "matplotlib is not installed")
    def test_matplotlib_artifact(self):
        msgs = self.w.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nNone")
        [art] = by_type(msgs, "artifact")
        self.assertTrue(base64.b64decode(art["data"]).startswith(b"\x89PNG"))

    def test_interrupt_keeps_state_and_raised_keyboardinterrupt_is_an_error(self):
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("kept = 9\nimport time\nwhile True:\n    time.sleep(0.01)")
        t.join()
        self.assertEqual(by_type(msgs, "error")[0]["name"], "KeyboardInterrupt")
        self.assertEqual(done(msgs)["status"], "interrupted")
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("!sleep 100")
        t.join()
        self.assertEqual(done(msgs)["status"], "interrupted")
        self.assertEqual(by_type(self.w.run("kept"), "result")[0]["data"]["text/plain"], "9")
        msgs = self.w.run("raise KeyboardInterrupt")
        self.assertEqual(done(msgs)["status"], "error")

    def test_envs_restored(self):
        msgs = self.w.run("import os\nos.environ.get('HUTCH_E')", envs={"HUTCH_E": "1"})
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "'1'")
        msgs = self.w.run("os.environ.get('HUTCH_E') is None")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "True")


@unittest.skipUnless(NODE, "node is not installed")
class NodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = Worker("javascript")

    @classmethod
    def tearDownClass(cls):
        cls.w.close()

    def result(self, code):
        msgs = self.w.run(code)
        res = by_type(msgs, "result")
        self.assertEqual(len(res), 1, msgs)
        return res[0]["data"]["text/plain"]

    def test_ready(self):
        self.assertEqual(self.w.ready["kernel"], "node")
        self.assertEqual(self.w.ready["language"], "javascript")

    def test_declarations_persist_and_can_be_declared_again(self):
        self.w.run("let a = 1; const b = 2; class K { v() { return 3 } }; function f() { return 4 }")
        self.assertEqual(self.result("a + b + new K().v() + f()"), "10")
        self.w.run("const b = 20")  # running a cell again must not fail
        self.assertEqual(self.result("b"), "20")

    def test_top_level_await_and_last_expression(self):
        self.w.run("const z = await new Promise((r) => setTimeout(() => r(5), 10))")
        self.assertEqual(self.result("z"), "5")
        self.assertEqual(self.result("await Promise.resolve(1)\nconst arr = [1, 2]\narr\n  .map((x) => x * z)"), "[ 5, 10 ]")
        self.assertEqual(self.result("arr.length"), "2")

    def test_static_and_dynamic_imports(self):
        self.w.run("import path, {join as j} from 'node:path'; import * as os from 'os'; import 'util'")
        self.assertEqual(self.result("[path.basename('/a/b'), j('x', 'y'), typeof os.cpus]"), "[ 'b', 'x/y', 'function' ]")
        msgs = self.w.run("(await import('node:path')).sep")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "'/'")
        self.assertNotIn("ExperimentalWarning", self.w.stderr.decode())

    def test_console_goes_to_fds_and_require_works(self):
        msgs = self.w.run("console.log('out', 1); console.error('err'); process.stdout.write('raw\\n'); require('path').join('a', 'b')")
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "'a/b'")
        self.assertEqual(self.w.stdout.decode(), "out 1\nraw\n")
        self.assertEqual(self.w.stderr.decode(), "err\n")

    def test_error_shows_the_source_line(self):
        msgs = self.w.run("function g() {\n  return null.x\n}\ng()")
        [err] = by_type(msgs, "error")
        self.assertEqual(err["name"], "TypeError")
        self.assertIn("return null.x", err["traceback"])
        self.assertRegex(err["traceback"], r"<cell-\d+>:2")
        self.assertEqual(done(msgs)["status"], "error")

    def test_interrupt_of_a_busy_loop_keeps_state(self):
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("let kept = 7; while (true) {}")
        t.join()
        self.assertEqual(by_type(msgs, "error")[0]["name"], "KeyboardInterrupt")
        self.assertEqual(done(msgs)["status"], "interrupted")
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("await new Promise(() => {})")
        t.join()
        self.assertEqual(done(msgs)["status"], "interrupted")
        self.assertEqual(self.result("kept"), "7")

    def test_cwd_and_envs(self):
        self.w.run("process.chdir('/tmp')")
        self.assertEqual(self.result("process.cwd()"), "'/tmp'")
        msgs = self.w.run("process.env.HUTCH_E", envs={"HUTCH_E": "v"})
        self.assertEqual(by_type(msgs, "result")[0]["data"]["text/plain"], "'v'")
        self.assertEqual(self.result("process.env.HUTCH_E === undefined"), "true")

    def test_process_exit(self):
        w = Worker("javascript")
        w.run("console.log('bye'); process.exit(4)")
        self.assertEqual(w.wait_exit(), 4)
        self.assertEqual(w.stdout.decode(), "bye\n")
        w.close()


class BashTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = Worker("bash")

    @classmethod
    def tearDownClass(cls):
        cls.w.close()

    def test_ready(self):
        self.assertEqual(self.w.ready["kernel"], "bash")

    def test_variables_functions_and_cd_persist(self):
        self.w.run("cd /tmp; x='a \"quoted\" \\\\ value'; declare -a arr=(1 2 3); greet() { echo \"hi $1\"; }")
        msgs = self.w.run('echo "$PWD|$x|${arr[2]}"; greet you')
        self.assertEqual(done(msgs)["status"], "ok")
        self.assertEqual(self.w.stdout.decode(), '/tmp|a "quoted" \\\\ value|3\nhi you\n')

    def test_unicode_and_escapes_survive_decoding(self):
        self.w.run("printf '%s|' 'h\u00e9llo \u2713 \U0001f600' 'tab\there' 'back\\\\slash\\n' \"q'\\\"\"")
        self.assertEqual(self.w.stdout.decode(), "h\u00e9llo \u2713 \U0001f600|tab\there|back\\\\slash\\n|q'\"|")

    def test_exit_status_is_an_error(self):
        msgs = self.w.run("echo before; (exit 3)")
        [err] = by_type(msgs, "error")
        self.assertEqual(err["name"], "ExitStatus")
        self.assertEqual(err["value"], "exit status 3")
        self.assertEqual(done(msgs)["status"], "error")
        self.assertEqual(done(self.w.run("true"))["status"], "ok")

    def test_interrupt_of_sleep_keeps_the_shell(self):
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("kept=8; sleep 100; echo not-reached")
        t.join()
        self.assertEqual(done(msgs)["status"], "interrupted")
        self.assertNotIn("not-reached", self.w.stdout.decode())
        t = interrupt_after(self.w, 0.5)
        msgs = self.w.run("while :; do :; done")
        t.join()
        self.assertEqual(done(msgs)["status"], "interrupted")
        self.w.run("echo $kept")
        self.assertEqual(self.w.stdout.decode(), "8\n")

    def test_envs_restored(self):
        self.w.run("export HUTCH_KEEP=before")
        self.w.run('echo "$HUTCH_NEW $HUTCH_KEEP"; sh -c \'echo "$HUTCH_NEW"\'', envs={"HUTCH_NEW": "n", "HUTCH_KEEP": "d"})
        self.assertEqual(self.w.stdout.decode(), "n d\nn\n")
        self.w.run('echo "${HUTCH_NEW-unset} $HUTCH_KEEP"')
        self.assertEqual(self.w.stdout.decode(), "unset before\n")

    def test_control_fds_are_not_inherited(self):
        self.w.run("sh -c 'ls /proc/$$/fd'")
        fds = self.w.stdout.decode().split()
        self.assertIn("1", fds)
        for fd in ("3", "4", "5"):
            self.assertNotIn(fd, fds)

    def test_exit_ends_the_worker(self):
        w = Worker("bash")
        w.run("echo bye; exit 5")
        self.assertEqual(w.wait_exit(), 5)
        self.assertEqual(w.stdout.decode(), "bye\n")
        w.close()


if __name__ == "__main__":
    unittest.main()
