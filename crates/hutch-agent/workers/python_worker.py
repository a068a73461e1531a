# hutch python interpreter worker.
#
# Run by the agent as `python3 -S /proc/self/fd/5`, where fd 5 is python_boot.py, which reads
# this code from fd 6, compiles it in a forked child and runs it (both are sealed memfds). The
# other descriptors: fd 0 = /dev/null, fds 1/2 = pipes the agent reads raw, fd 3 = control in
# (one JSON object per line), fd 4 = control out. The protocol is in
# crates/hutch-agent/workers/README.md. Kernel (HUTCH_KERNEL): `auto` = plain CPython that turns
# itself into IPython's InteractiveShell, over the same namespace, at the first cell written in
# IPython-only syntax; `python` = plain CPython only; `ipython` = IPython from the start.
#
# The agent runs it with `-S` (the `site` module's startup work costs about as much as the rest
# of the worker): the worker adds the site-packages directories itself (see _add_site_dirs).
#
# Startup is kept minimal for the plain kernel: no `json`, `re`, `ast`, `signal`, `traceback`
# or `linecache` import at start (the C modules `_json` and `_signal` are used instead, `_ast`
# at the first execution; everything else is imported when first needed).
#
# Layout: the code needed only later (`_COLD_SRC`, and `_IPYTHON_SRC` for IPython: strings
# compiled at their first use), then the worker, which ends by running `_main()`.

# --- code needed only later -------------------------------------------------------------
# Compiled at first use: compiling it at start would cost more than the rest of the worker.

_COLD_SRC = r'''
# --- exit -----------------------------------------------------------------------------------


def _exit_worker(code):
    if code is None:
        rc = 0
    elif isinstance(code, int):
        rc = code
    else:
        try:
            print(code, file=sys.stderr)
        except Exception:
            pass
        rc = 1
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass
    _flush_stdio()
    _libc_fflush()
    os._exit(rc & 0xFF)


# --- tracebacks ----------------------------------------------------------------------------


def _strip_worker_frames(tb):
    """The traceback `tb` without the worker's own frames."""
    import types

    kept = []
    while tb is not None:
        if tb.tb_frame.f_globals is not _G:
            kept.append(tb)
        tb = tb.tb_next
    for t in reversed(kept):
        tb = types.TracebackType(tb, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return tb


def _format_exc(e):
    """Traceback text of `e` without the worker's own leading frames."""
    _sync_linecache()
    import traceback

    tb = _strip_worker_frames(e.__traceback__)
    try:
        return "".join(traceback.format_exception(type(e), e, tb))
    except Exception:
        return "%s: %s\n" % (type(e).__name__, e)


def _report_now(e):
    """Sends the error `e` a cell ended with; running out of memory in a step of the worker's
    own (the innermost frame is the worker's: compiling the cell, building or sending a
    result) becomes a MemoryError that says that the context's memory is used up."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if _no_memory(e) and tb is not None and tb.tb_frame.f_globals is _G:
        e = MemoryError(_NO_MEMORY).with_traceback(e.__traceback__)
    _send_error(type(e).__name__, _exc_value(e), _format_exc(e))


# --- rich display ---------------------------------------------------------------------------

_REPRS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("application/json", "_repr_json_"),
    ("text/latex", "_repr_latex_"),
    ("application/pdf", "_repr_pdf_"),
    ("application/javascript", "_repr_javascript_"),
)


def _b64(b):
    import binascii

    return binascii.b2a_base64(b, newline=False).decode("ascii")


def _mime_value(mime, v):
    if isinstance(v, tuple) and v:
        v = v[0]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _b64(bytes(v))
    if mime == "application/json" or isinstance(v, str):
        return v
    return str(v)


def _bundle(obj):
    data = {}
    cls = type(obj)
    if callable(getattr(cls, "_repr_mimebundle_", None)):
        try:
            r = obj._repr_mimebundle_()
            if isinstance(r, tuple):
                r = r[0]
            if isinstance(r, dict):
                for k, v in r.items():
                    if v is not None:
                        data[str(k)] = _mime_value(str(k), v)
        except Exception:
            pass
    for mime, meth in _REPRS:
        if mime in data or not callable(getattr(cls, meth, None)):
            continue
        try:
            v = getattr(obj, meth)()
        except Exception:
            continue
        if v is not None:
            data[mime] = _mime_value(mime, v)
    if "text/plain" not in data:
        data["text/plain"] = repr(obj)
    return data


def _display_now(*objs, raw=False, include=None, exclude=None, **kwargs):
    """`display()` for the plain kernel: each object becomes a `result` message (`include`
    and `exclude` pick MIME types as in IPython's display(); its other options do nothing)."""
    for obj in objs:
        if raw and isinstance(obj, dict):
            data = {str(k): _mime_value(str(k), v) for k, v in obj.items()}
        else:
            data = _retry(_bundle, obj)
        if include or exclude:
            data = {k: v for k, v in data.items()
                    if (not include or k in include) and not (exclude and k in exclude)}
            if not data:
                continue
        _send_result(data)


# --- matplotlib figures --------------------------------------------------------------------


def _emit_figures_now():
    """Every open pyplot figure becomes an `artifact` PNG and is closed."""
    global _fig_seq
    if "matplotlib.pyplot" not in sys.modules:
        return
    try:
        from matplotlib._pylab_helpers import Gcf
        import matplotlib.pyplot as plt
    except Exception:
        return
    for manager in list(Gcf.get_all_fig_managers()):
        fig = manager.canvas.figure
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            _fig_seq += 1
            _send(
                {
                    "type": "artifact",
                    "id": _cur_id,
                    "name": "figure-%d.png" % _fig_seq,
                    "mimeType": "image/png",
                    "data": _b64(buf.getvalue()),
                }
            )
        finally:
            plt.close(fig)


def _patch_pyplot(plt):
    orig = plt.show

    def show(*args, **kwargs):
        if _executing:
            _emit_figures()
        else:
            return orig(*args, **kwargs)

    show.__doc__ = orig.__doc__
    plt.show = show

'''

# Needed only with IPython: the IPython kernel (`ipython`, or `auto` once switched) and, in the
# plain kernel, IPython's display() made the worker's. Compiled after `_COLD_SRC`.
_IPYTHON_SRC = r'''
# --- IPython's display() in the plain kernel ------------------------------------------------


def _patch_ipython_display(mod):
    """IPython's display() (defined in `mod`) prints the objects when no IPython shell runs,
    `clear_output()` prints terminal escapes: in the plain kernel (`auto` before it switches)
    they become the worker's display() (with IPython's DisplayHandle for a `display_id`, so
    `update_display` sends the new object) and nothing."""
    ns = mod.__dict__
    orig, orig_clear = ns.get("display"), ns.get("clear_output")
    if not callable(orig) or hasattr(orig, "__wrapped__"):
        return  # not defined here, or patched already
    if not isinstance(_G.get("_kernel"), _PlainKernel):
        return  # `ipython` from the start: IPython's own work

    def display(*objs, **kwargs):
        if _kernel.name != "python":  # switched to IPython
            return orig(*objs, **kwargs)
        _display_now(*objs, **kwargs)
        did = kwargs.get("display_id")
        handle = ns.get("DisplayHandle")
        if did and handle is not None:
            return handle(None if did is True else did)

    def clear_output(wait=False):
        if _kernel.name != "python":
            return orig_clear(wait)

    display.__doc__ = orig.__doc__
    display.__wrapped__ = orig  # help() and signature() show IPython's
    ns["display"] = display
    if callable(orig_clear):
        ns["clear_output"] = clear_output


# --- IPython kernel -------------------------------------------------------------------------


def _make_ipython_kernel(module=None):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from traitlets import Type
    from traitlets.config import Config

    class HutchDisplayHook(DisplayHook):
        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            _send_result({str(k): _mime_value(str(k), v) for k, v in format_dict.items()})

        def finish_displayhook(self):
            pass

    class HutchDisplayPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
            _send_result({str(k): _mime_value(str(k), v) for k, v in data.items()})

        def clear_output(self, wait=False):
            pass

    class HutchShell(InteractiveShell):
        displayhook_class = Type(HutchDisplayHook)
        display_pub_class = Type(HutchDisplayPublisher)
        # `!cmd` runs with the worker's fds 1/2 (no pty), so its output is captured raw.
        system = InteractiveShell.system_raw

        exit_request = None

        def enable_gui(self, gui=None):
            # `%matplotlib inline` needs no event loop; there is no display for a GUI one.
            if gui not in (None, "inline"):
                raise RuntimeError("no GUI event loop in a sandbox (no display): %s" % gui)

        def ask_exit(self):
            # `exit()` / `quit()` (IPython's ExitAutocall)
            self.exit_now = True

        def showtraceback(self, exc_tuple=None, *args, **kwargs):
            et, ev, tb = exc_tuple or sys.exc_info()
            if et is not None and issubclass(et, SystemExit):
                self.exit_request = ev if ev is not None else SystemExit()
                return
            if et is not None:
                exc_tuple = (et, ev, _strip_worker_frames(tb))
            return super().showtraceback(exc_tuple, *args, **kwargs)

        def _showtraceback(self, etype, evalue, stb):
            try:
                text = self.InteractiveTB.stb2text(stb)
            except Exception:
                text = "\n".join(stb)
            _send_error(getattr(etype, "__name__", str(etype)), _exc_value(evalue), text)

    import warnings

    warnings.filterwarnings("ignore", message="To exit: use")
    c = Config()
    c.HistoryManager.enabled = False
    c.InteractiveShell.colors = "NoColor"
    c.InteractiveShell.autoindent = False
    shell = HutchShell.instance(config=c, user_module=module)
    shell.register_magic_function(_pip_magic, "line", "pip")
    return shell


# The session's own directory for Python packages (`PYTHON_LIBRARIES_DIR` of the agent's
# `interpreter/libraries.rs`), on every process's PYTHONPATH.
_LIBRARIES_DIR = "/workspace/.hutch/site-packages"
# Options by which `pip install` is told where to install.
_PIP_WHERE = ("-t", "--target", "--prefix", "--root", "--user")


def _pip_magic(line):
    """`%pip ARGS`: pip of this interpreter. An `install` outside a virtual environment that
    names no destination goes to the session's libraries directory, as `libraries` do: images
    that follow PEP 668 refuse installs into their own site-packages."""
    import importlib
    import shlex
    import subprocess

    args = shlex.split(line)
    outside_venv = sys.prefix == sys.base_prefix
    names_where = any(a.split("=", 1)[0] in _PIP_WHERE for a in args)
    if args[:1] == ["install"] and outside_venv and not names_where:
        args[1:1] = ["--target", _LIBRARIES_DIR]
    env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore")
    code = subprocess.call([sys.executable, "-m", "pip", *args], env=env)
    importlib.invalidate_caches()
    if _LIBRARIES_DIR not in sys.path:
        sys.path.append(_LIBRARIES_DIR)
    if code != 0:
        print("pip exited with code %d" % code, file=sys.stderr)


class _IPythonKernel:
    name = "ipython"

    def __init__(self, module=None):
        import warnings

        # Startup warnings (e.g. an unwritable HOME for ~/.ipython) would land in the output
        # of the first execution.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.shell = _make_ipython_kernel(module)

    def run(self, code, n):
        global _count
        shell = self.shell
        _count = shell.execution_count
        res = shell.run_cell(code, store_history=True)
        if shell.exit_request is not None:
            raise shell.exit_request
        if getattr(shell, "exit_now", False):
            raise SystemExit(0)
        _emit_figures()
        if not res.success and not _error_sent:
            e = res.error_before_exec or res.error_in_exec
            if e is not None and _no_memory(e):  # IPython could not even show it
                _send_error("MemoryError", _NO_MEMORY, "")
            elif e is not None:
                _send_error(type(e).__name__, _exc_value(e), "")
        return None


def _upgrade(plain, n):
    """Turns the `auto` worker into the IPython kernel, before cell `n` runs; returns it.

    The shell is created over the plain kernel's `__main__` module, so every variable survives;
    the earlier cells become `In[1]`…`In[n-1]` and counting goes on from `n`. Without IPython
    it returns None (the cell then fails with plain Python's SyntaxError) and never tries again
    (unless memory ran out).
    """
    global _kernel, _switched, _deferring, _pending
    # SIGINT waits until the shell is whole (a half-imported IPython would stay broken).
    _deferring = True
    try:
        kernel = _IPythonKernel(plain.module)
    except Exception as e:
        if not _no_memory(e):  # for want of memory: again at the next such cell
            plain.upgrade = False
        print("hutch: IPython syntax needs IPython, which could not be loaded (%s)"
              % _exc_value(e), file=sys.stderr)
        return None
    finally:
        _deferring = False
    shell = kernel.shell
    hist = shell.history_manager
    for i in range(1, n):
        src = _sources.get("<cell-%d>" % i, "")
        hist.input_hist_parsed.append(src)
        hist.input_hist_raw.append(src)
    shell.execution_count = n
    _kernel = kernel
    _switched = True
    if _pending:
        # Interrupted while IPython loaded: the cell counts as run, as in the plain kernel.
        _pending = False
        shell.execution_count = n + 1
        raise KeyboardInterrupt
    return kernel
'''

# --- the worker -----------------------------------------------------------------------------

# Until the first execution `os` is `posix`, whose functions `os` re-exports: importing `os`
# (with `stat`, `posixpath` and `_collections_abc`) is left to `_finish_start`.
import posix as os
import sys
import io
import _json
import _signal

_G = globals()
_PID = os.getpid()
_CTL_IN = 3
_CTL_OUT = 4

_SOURCE_FD = 5

for _fd in (_CTL_IN, _CTL_OUT):
    os.set_inheritable(_fd, False)

# PYTHONSAFEPATH=1 comes from the agent when HUTCH_SAFE_PATH is set too (see worker.rs): both
# leave the environment, and Python (3.11 and later) put nothing first on sys.path.
_safe_path = os.environ.pop(b"HUTCH_SAFE_PATH", None) is not None
if _safe_path:
    os.unsetenv("HUTCH_SAFE_PATH")
    os.environ.pop(b"PYTHONSAFEPATH", None)
    os.unsetenv("PYTHONSAFEPATH")

# Descriptor 5 holds python_boot.py, or the worker's compiled code (run by python_start.py).
try:
    os.close(_SOURCE_FD)
except OSError:
    pass

# Started from python_boot.py's descriptor, Python put the memfd's directory first on sys.path
# (unless PYTHONSAFEPATH took) and named the worker in __file__ and sys.argv: make the user's
# namespace what `python3 -c` gives (the current directory first on sys.path, sys.argv ['-c'],
# no __file__). Started from compiled code by `python3 -c`, it has that already.
if sys.argv and sys.argv[0] == "/proc/self/fd/%d" % _SOURCE_FD:
    sys.argv[0] = "-c"
    if getattr(sys.flags, "safe_path", False):
        if _safe_path:
            sys.path.insert(0, "")
    elif sys.path:
        sys.path[0] = ""
    for _name in ("__file__", "__cached__"):
        _G.pop(_name, None)


def _add_site_dirs():
    """What `site` would have done at startup, for a worker run with `python3 -S`.

    The user site (when enabled) and the platform's site-packages directories are appended to
    `sys.path`, with the directories listed by path lines of their `.pth` files; `import` lines
    of `.pth` files and `sitecustomize` are not run. `exit`, `quit`, `help`, `copyright`,
    `credits` and `license` become builtins as usual. In a virtual environment (a
    `pyvenv.cfg` beside the interpreter) `site.main()` runs instead, so nothing differs there.
    """
    import site

    exe_dir = os.path.dirname(sys.executable)
    for cfg in (exe_dir, os.path.dirname(exe_dir)):
        if os.path.isfile(os.path.join(cfg, "pyvenv.cfg")):
            site.main()
            return
    site.ENABLE_USER_SITE = site.check_enableusersite()
    dirs = []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs.extend(site.getsitepackages())
    known = set(sys.path)
    for d in dirs:
        if d in known or not os.path.isdir(d):
            continue
        known.add(d)
        sys.path.append(d)
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".pth") and not n.startswith("."))
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(d, name), encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith(("#", "import ", "import\t")):
                    continue
                p = os.path.join(d, line)
                if p not in known and os.path.exists(p):
                    known.add(p)
                    sys.path.append(p)
    site.setquit()
    site.setcopyright()
    site.sethelper()


_started = False


def _finish_start():
    """What the worker needs before it runs code, left out of its start so that an idle
    worker (a session's `default` context that never runs code) holds less: the `os` module,
    the site-packages directories with `exit`, `quit` and `help` (see _add_site_dirs), and
    MPLBACKEND in the environment. Run again after a MemoryError."""
    global os, _started
    import os

    os.environ["MPLBACKEND"] = "Agg"
    if sys.flags.no_site:
        _add_site_dirs()
    _started = True

# --- JSON without importing `json` (which imports `re`) -------------------------------------


class _ScanCtx:
    strict = False
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo = {}


_scan = _json.make_scanner(_ScanCtx())
_esc = _json.encode_basestring_ascii


def _enc_str(s):
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates are not valid JSON text for strict parsers.
            s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return _esc(s)


def _enc(o):
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, str):
        return _enc_str(o)
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        if o != o or o in (float("inf"), float("-inf")):
            return "null"
        return float.__repr__(o)
    if isinstance(o, dict):
        return "{" + ",".join(_enc_str(str(k)) + ":" + _enc(v) for k, v in o.items()) + "}"
    if isinstance(o, (list, tuple)):
        return "[" + ",".join(_enc(v) for v in o) + "]"
    return _enc_str(str(o))


# --- stdout/stderr: unbuffered, straight to fds 1/2 -----------------------------------------


class _FdWriter(io.RawIOBase):
    """Raw writer that writes everything it is given (loops over partial writes)."""

    def __init__(self, fd):
        self._fd = fd

    def writable(self):
        return True

    def fileno(self):
        return self._fd

    def isatty(self):
        return False

    def write(self, b):
        if type(b) is not bytes:  # TextIOWrapper gives bytes
            b = memoryview(b).cast("B")
        _write_all(self._fd, b)
        return len(b)


_old_stdio = (sys.stdout, sys.stderr)  # kept referenced: collecting them would close fds 1/2
for _name, _fd in (("stdout", 1), ("stderr", 2)):
    _s = io.TextIOWrapper(
        _FdWriter(_fd), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    setattr(sys, _name, _s)
    setattr(sys, "__%s__" % _name, _s)
del _name, _fd, _s


def _flush_stdio():
    for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            s.flush()
        except Exception:
            pass
    if "ctypes" in sys.modules:
        _libc_fflush()


def _libc_fflush():
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass


# --- control channel ------------------------------------------------------------------------

_executing = False  # a cell (or its result formatting) is running: SIGINT raises
_interrupted = False  # SIGINT arrived during this execution
_deferring = False  # a control message is being written: SIGINT waits until it is whole
_pending = False
_cur_id = None
_count = 0


def _on_sigint(signum, frame):
    global _interrupted, _pending
    if not _executing:
        return
    _interrupted = True
    if _deferring:
        _pending = True
        return
    raise KeyboardInterrupt


_signal.signal(_signal.SIGINT, _on_sigint)


def _send(obj):
    # A MemoryError (raised before any of it is written) frees what it can, and once more.
    global _deferring, _pending
    try:
        data = (_enc(obj) + "\n").encode("ascii")
    except MemoryError:
        _free_memory()
        data = (_enc(obj) + "\n").encode("ascii")
    _deferring = True
    try:
        _write_all(_CTL_OUT, data)
    except OSError:
        # The agent is gone.
        os._exit(1)
    finally:
        _deferring = False
    if _pending and _executing:
        _pending = False
        raise KeyboardInterrupt


def _write_all(fd, data):  # `data`: bytes, or a memoryview of bytes
    off = os.write(fd, data)
    if off < len(data):  # a signal interrupted the write
        mv = memoryview(data)
        while off < len(mv):
            off += os.write(fd, mv[off:])


def _send_result(data):
    _send({"type": "result", "id": _cur_id, "data": data, "executionCount": _count})


def _send_error(name, value, tb):
    global _error_sent
    _error_sent = True
    _send({"type": "error", "id": _cur_id, "name": name, "value": value, "traceback": tb})


_error_sent = False


_inbuf = bytearray()  # control input read and not yet taken
# (Under memory pressure no bytearray is made from another: when CPython 3.11 finds no room
# for a new one's bytes, it prints a bogus SystemError about exported buffers.)


# The next control message, decoded; None at the end of input, False for a line that is none
# (or was answered for want of memory).
def _next_request():
    i = _line_end()
    if i is None:
        return None
    buf = _inbuf
    try:
        msg = _retry(_decode, buf, i)
    except (MemoryError, SystemError):
        msg = _id_in(buf, i)
        del buf[: i + 1]
        _answer_no_memory(msg)
        return False
    except Exception:
        msg = False
    del buf[: i + 1]
    return False if msg is None else msg


def _decode(buf, end):
    s = str(memoryview(buf)[:end], "utf-8", "replace").strip()
    if not s:
        return None
    obj, end = _scan(s, 0)
    return obj


# Where the next control line ends in `_inbuf` (its newline), read as far as needed; None at
# the end of input. It reads 4 KiB (most requests), then 64 KiB pieces. After a MemoryError the
# worker frees what it can and reads on in 4 KiB pieces; a line that still finds no room is
# skipped and answered (`_skip_line`).
def _line_end():
    buf = _inbuf
    start = 0
    size = 4096
    retried = False
    chunk = None  # read, not yet in buf
    while True:
        try:
            if chunk is None:
                i = buf.find(b"\n", start)
                if i >= 0:
                    return i
                start = len(buf)
                chunk = os.read(_CTL_IN, size)
                if not chunk:
                    return None
                if not retried:
                    size = 1 << 16
            buf += chunk
            chunk = None
        except MemoryError:
            if not retried:
                retried = True
                size = 4096
                _free_memory()
            elif not _skip_line(chunk):
                return None
            else:
                start, size, retried, chunk = 0, 4096, False, None


# Skips the control line being read, for which there is no room (it starts in `_inbuf`, goes on
# in `chunk` if not None, then in the pipe), and answers its execution; False at the end of
# input. The `id` is sought in all of the line at hand, else in its end.
def _skip_line(chunk):
    buf = _inbuf
    i = buf.find(b"\n")
    if i >= 0:
        found = _id_in(buf, i)
        del buf[: i + 1]
    else:
        found = _id_in(buf, len(buf))
        del buf[:]
        tail = b""  # the end of what was read of the line
        while True:
            if chunk is None:
                chunk = _retry(os.read, _CTL_IN, 4096)
                if not chunk:
                    return False
            i = chunk.find(b"\n")
            if i >= 0:
                tail += chunk[:i]
                buf += chunk[i + 1 :]
                break
            tail = chunk[-128:]
            chunk = None
        found = _id_in(tail, len(tail)) or found
    _answer_no_memory(found)
    return True


# The `id` of an execute request from its line, `data[:end]` or part of it, or None: `"id":`
# and digits occur nowhere else in a request (quotes in strings are escaped, and the values of
# `envs` are strings).
def _id_in(data, end):
    while True:
        i = data.rfind(b'"id":', 0, end)
        if i < 0:
            return None
        n = None
        for c in memoryview(data)[i + 5 : end]:
            if not 48 <= c <= 57:
                break
            n = (n or 0) * 10 + c - 48
        if n is not None:
            return n
        end = i


# --- running out of memory ------------------------------------------------------------------
# A context's `memoryMb` is a data limit: once the user's objects fill it, every allocation
# fails with MemoryError, the worker's own too. A step of the worker's own (reading or decoding
# a request, compiling the cell, building or sending a message) then frees what it can
# (`_free_memory`) and runs once more; an execution that still cannot be run or reported is
# answered with a MemoryError that says so and `done`, and the worker waits for the next one,
# the user's variables intact. What it frees first is a small reserve (32 KiB in 8 KiB pieces,
# which fit where the memory freed before is cut up by what was made since), taken before a
# cell runs while it is not whole; a worker that never ran code holds none.

_RESERVE = 4  # pieces of 8 KiB
_reserve = []
_NO_MEMORY = (
    "the context's memory is used up: free memory (e.g. `del` big objects) or restart the context"
)


def _free_memory():  # after running out of memory in a step of the worker's own
    del _reserve[:]
    try:
        import gc

        gc.collect()
    except MemoryError:
        pass


# Whether the exception `e` says that memory ran out: a MemoryError, an OSError ENOMEM of a
# system call for which the C library found no memory (`os.listdir` in an import), or a
# SystemError (CPython 3.11's compile() reports some failed allocations as "error return
# without exception set").
def _no_memory(e):
    return isinstance(e, (MemoryError, SystemError)) or isinstance(e, OSError) and e.errno == 12


def _arm():  # takes what is missing of the reserve, as far as the memory goes
    try:
        import gc  # first, not in the space of the reserve when it is given back

        while len(_reserve) < _RESERVE:
            _reserve.append(bytearray(8 << 10))
    except MemoryError:
        pass


def _retry(f, *args):  # f(*args), once more after running out of memory and _free_memory()
    try:
        return f(*args)
    except (MemoryError, OSError, SystemError) as e:
        if not _no_memory(e):
            raise
    _free_memory()
    return f(*args)


# Sends the error `e` a cell ended with (`_report_now`) or, when there is no memory to format
# or send it, a MemoryError that says so.
def _report(e):
    try:
        _cold()
        return _retry(_report_now, e)
    except (MemoryError, OSError, SystemError) as x:
        if not _no_memory(x):
            raise
    _free_memory()
    _send_error("MemoryError", _NO_MEMORY, "MemoryError: %s\n" % _NO_MEMORY)


def _answer_no_memory(id):  # of an execution that could not be run or reported
    global _cur_id
    _cur_id = id
    _free_memory()
    _send_error("MemoryError", _NO_MEMORY, "MemoryError: %s\n" % _NO_MEMORY)
    _send_done("error")


# --- source registry for tracebacks ---------------------------------------------------------

_sources = {}  # filename -> source, all cells of this worker
_unregistered = []


def _register_source(fname, src):
    _sources[fname] = src
    _unregistered.append(fname)
    if "linecache" in sys.modules:
        _sync_linecache()


def _sync_linecache():
    import linecache

    while _unregistered:
        f = _unregistered.pop()
        src = _sources[f]
        linecache.cache[f] = (len(src), None, src.splitlines(True), f)


def _exc_value(e):
    try:
        return str(e)
    except Exception:
        return "<unprintable %s>" % type(e).__name__


# --- matplotlib: Agg backend, open figures become artifacts ---------------------------------

_fig_seq = 0  # figures of the current execution


def _emit_figures():
    """Every open pyplot figure becomes an `artifact` PNG and is closed."""
    if "matplotlib.pyplot" in sys.modules:
        _cold()
        _emit_figures_now()


# Modules patched once they load, by a function of the cold code: `plt.show()` emits the
# figures; in the plain kernel IPython's display() sends results as the builtin display() does
# (defined in display_functions since IPython 7.23, in display before).
_PATCHES = {
    "matplotlib.pyplot": "_patch_pyplot",
    "IPython.core.display_functions": "_patch_ipython_display",
    "IPython.core.display": "_patch_ipython_display",
}


class _ImportHook:
    """Import hook: patches the modules of `_PATCHES` once they load."""

    def find_spec(self, name, path=None, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        orig = getattr(loader, "exec_module", None)
        if orig is None:
            return spec

        def exec_module(module):
            orig(module)
            try:
                _cold(_COLD_SRC if patch == "_patch_pyplot" else _IPYTHON_SRC)
                _G[patch](module)
            except Exception:
                pass

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _ImportHook())

def _display(*objs, **kwargs):
    """`display()` for the plain kernel: each object becomes a `result` message."""
    _cold()
    return _display_now(*objs, **kwargs)


# --- plain CPython kernel -------------------------------------------------------------------


class _PlainKernel:
    name = "python"

    def __init__(self, upgrade=False):
        # `auto`: a cell in IPython-only syntax turns the worker into the IPython kernel.
        self.upgrade = upgrade
        mod = type(sys)("__main__")
        mod.__builtins__ = __builtins__
        self.ns = mod.__dict__
        self.module = mod
        sys.modules["__main__"] = mod
        import builtins

        builtins.display = _display
        self.loop = None

    def _await(self, coro):
        import asyncio

        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        return self.loop.run_until_complete(coro)

    def _eval(self, co):
        if len(_reserve) < _RESERVE:  # given back to compile the cell
            _arm()
        r = eval(co, self.ns)
        if co.co_flags & 0x80:  # CO_COROUTINE: the cell uses top-level await
            r = self._await(r)
        return r

    def run(self, code, n):
        """Runs one cell; exceptions of user code propagate. Returns None."""
        fname = "<cell-%d>" % n
        _register_source(fname, code)
        import _ast

        flags = _ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        try:
            tree = _retry(compile, code, fname, "exec", _ast.PyCF_ONLY_AST | flags)
        except SyntaxError as e:
            if not (self.upgrade and _ipython_syntax(e)):
                raise
            syntax_error = e
            tree = None
        if tree is None:
            # Outside the `except` block, so the cell does not run with a SyntaxError being
            # handled (`sys.exc_info()`, a bare `raise`).
            _cold(_IPYTHON_SRC)
            kernel = _upgrade(self, n)
            if kernel is None:
                raise syntax_error
            return kernel.run(code, n)
        last = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            last = tree.body.pop()
        if tree.body:
            self._eval(_retry(compile, tree, fname, "exec", flags))
        if last is not None:
            value = self._eval(_retry(compile, _ast.Expression(last.value), fname, "eval", flags))
            if value is not None and not code.rstrip().endswith(";"):
                self.ns["_"] = value
                _cold()
                _send_result(_retry(_bundle, value))
        _emit_figures()
        return None


def _ipython_syntax(e):
    """Whether the line a SyntaxError points at is written in IPython-only syntax.

    Asked only for a cell that does not compile as Python, so `a % b`, `a != b` or `%s` inside
    a string never count. The line (leading whitespace stripped) must start with `%` (line
    and cell magics), `!` (shell commands) or `?` (help), be a name followed by `?` or `??`
    (`obj.attr?`, `np.*load*?`), or assign from `!` or `%` (`files = !ls`, `here = %pwd`).
    """
    line = (e.text or "").strip()
    if not line:
        return False
    if line[0] in "%!?":
        return True
    if line.endswith("?"):
        name = line.rstrip("?").rstrip()
        return len(line) - len(line.rstrip("?")) <= 2 and _is_name(name, "_.*")
    target, eq, value = line.partition("=")
    if not eq or not value.lstrip().startswith(("!", "%")):
        return False
    # `name = !cmd`, `a, b = %magic`, `obj.attr = !cmd`, `x[0] = !cmd`
    return _is_name(target.strip(), "_.,[] ")


def _is_name(s, extra):
    return s != "" and not s[0].isdigit() and all(c.isalnum() or c in extra for c in s)


_cold_loaded = set()  # the cold sources compiled


def _cold(src=_COLD_SRC):  # compiles and runs `src` (`_IPYTHON_SRC` after `_COLD_SRC`) once
    if src not in _cold_loaded:
        if src is not _COLD_SRC:
            _cold()
        exec(_retry(compile, src, "<hutch-worker>", "exec"), _G)
        _cold_loaded.add(src)


# --- main loop ------------------------------------------------------------------------------


_switched = False  # this execution switched the kernel (reported on `done`)


def _tell_notice():
    global _notice
    if _notice:
        sys.stderr.write(_notice)
        sys.stderr.flush()
        _notice = None


def _execute(msg):
    global _executing, _interrupted, _pending, _cur_id, _count, _error_sent, _fig_seq
    _cur_id = msg.get("id")
    saved = []  # (name, previous value or None) of the variables of `envs`
    try:
        # Run again after running out of memory, it appends to `saved` again: restored last
        # first, each variable still gets its first value back.
        _retry(_prepare, msg, saved)
    except (MemoryError, OSError, SystemError) as e:
        if not _no_memory(e):
            raise
        _restore_envs(saved)
        _answer_no_memory(_cur_id)
        return
    if len(_reserve) < _RESERVE:
        _arm()
    _fig_seq = 0
    code = msg.get("code")
    if not isinstance(code, str):
        code = ""
    if _kernel.name == "python":
        _count += 1
    _interrupted = False
    _pending = False
    _error_sent = False
    failed = None
    try:
        try:
            _executing = True
            _tell_notice()
            _kernel.run(code, _count)
        finally:
            _executing = False
    except SystemExit as e:
        if os.getpid() == _PID:
            _restore_envs(saved)
        try:
            _cold()
        except (MemoryError, SystemError):
            _flush_stdio()
            os._exit(e.code & 0xFF if isinstance(e.code, int) else int(e.code is not None))
        _exit_worker(e.code)
    except BaseException as e:
        failed = e
    try:
        if failed is not None:
            _report(failed)
            failed = True
        if os.getpid() != _PID:
            # A fork()ed child of the cell returned into the worker: it must not speak the
            # protocol.
            _flush_stdio()
            os._exit(0)
        _restore_envs(saved)
        _flush_stdio()
        if _interrupted:
            if not _error_sent:
                _send_error("KeyboardInterrupt", "", "")
            status = "interrupted"
        elif failed or _error_sent:
            status = "error"
        else:
            status = "ok"
        _send_done(status)
    except (MemoryError, OSError) as e:
        if not _no_memory(e):
            raise
        failed = None
        _answer_no_memory(_cur_id)


# What runs before the cell: the rest of the start (first execution), `envs` set (their previous
# values appended to `saved`), the import caches invalidated after an install.
def _prepare(msg, saved):
    if not _started:
        _finish_start()
    envs = msg.get("envs")
    if isinstance(envs, dict):
        for k, v in envs.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                continue
            if "=" in k or "\0" in k or "\0" in v:
                continue
            saved.append((k, os.environ.get(k)))
            os.environ[k] = v
    if msg.get("installed"):
        # The agent installed libraries for this cell: directories on sys.path that did not
        # exist when they were first searched are searched again.
        import importlib

        importlib.invalidate_caches()


def _send_done(status):
    global _switched
    done = {"type": "done", "id": _cur_id, "status": status, "executionCount": _count}
    if _switched:
        # The cell turned an `auto` worker into the IPython kernel.
        _switched = False
        done["kernel"] = _kernel.name
    _send(done)


def _restore_envs(saved):  # their previous values back, the last set first
    while saved:
        k, old = saved.pop()
        try:
            _retry(_restore_env, k, old)
        except (MemoryError, OSError):
            pass  # the variable keeps the cell's value


def _restore_env(k, old):
    if old is None:
        os.environ.pop(k, None)
    else:
        os.environ[k] = old


# Why the kernel asked for could not start (the agent passes it in HUTCH_NOTICE), told on
# stderr at the first execution: what the worker prints before that belongs to no execution.
_notice = None

# The exit code of a worker whose IPython failed to start (not for want of IPython): the
# agent then starts a plain one, with a fresh address space (what the failed start took
# stays taken under a data limit, leaving a context with little memory no room for cells).
_KERNEL_FAILED = 75


def _choose_kernel():
    global _notice
    # Removed from the environment user code sees (`os.environ` wraps `posix.environ`).
    want = os.environ.pop(b"HUTCH_KERNEL", b"").decode("utf-8", "replace") or "auto"
    os.unsetenv("HUTCH_KERNEL")
    _notice = os.environ.pop(b"HUTCH_NOTICE", b"").decode("utf-8", "replace") or None
    os.unsetenv("HUTCH_NOTICE")
    if want == "ipython":
        # IPython lives in site-packages, and imports `os` anyway.
        _finish_start()
        try:
            _cold(_IPYTHON_SRC)
            return _IPythonKernel()
        except Exception as e:
            if not isinstance(e, ImportError):
                sys.stderr.write("IPython failed to start (%s)" % (_exc_value(e) or type(e).__name__))
                sys.stderr.flush()
                os._exit(_KERNEL_FAILED)
    return _PlainKernel(upgrade=want != "python")


_kernel = _choose_kernel()


def _main():
    _send({"type": "ready", "language": "python", "kernel": _kernel.name, "pid": _PID})
    stuck = 0  # failures for want of memory since a line was last read
    while True:
        try:
            msg = _next_request()
            if msg is None:
                break
            stuck = 0
            if isinstance(msg, dict) and msg.get("type") == "execute":
                _execute(msg)
        except (MemoryError, OSError) as e:
            if not _no_memory(e):
                raise
            # Even the answer for want of memory failed: the worker stays, for the next one,
            # unless it cannot even read one (not a byte to spare, and no reserve left).
            stuck += 1
            if stuck == 3:
                os.write(2, b"hutch: the worker has no memory left to read requests with\n")
                os._exit(1)
            _free_memory()
    _flush_stdio()
    os._exit(0)


_main()
