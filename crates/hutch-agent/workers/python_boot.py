# hutch python interpreter worker: its start.
#
# Run by the agent as `python3 -S /proc/self/fd/5` with fd 5 = this file and fd 6 = the
# worker's code (python_worker.py), both sealed memfds; the worker's other descriptors are
# described in python_worker.py.
#
# Whatever the start allocates and frees stays in every idle worker as holes in its heap, so
# it allocates little. Python parses this file in the worker itself, so it is short (each
# line of code costs a little heap for good); the worker's code, whose parse peaks at about
# 1.5 MiB, is compiled by a forked child, which reads it, sends it back marshalled and exits.
# The parent unmarshals it straight from the pipe, in small pieces (one large buffer freed
# would also raise the C library's mmap threshold for good). If the child cannot be made or
# fails, the code is compiled here.


def _compile_apart(fd, name):
    """The code in the file at descriptor `fd` (closed here), compiled in a forked child."""
    import posix as os  # `os` itself waits for the first execution (see _finish_start)
    import marshal

    def source():  # pread: every worker shares the agent's open file, and so its offset
        return os.pread(fd, os.fstat(fd).st_size, 0)

    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        pid = None
    if pid == 0:
        status = 1
        try:
            os.close(r)
            data = memoryview(marshal.dumps(compile(source(), name, "exec")))
            while data:
                data = data[os.write(w, data):]
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    code = None
    if pid:
        with open(r, "rb") as f:  # marshal reads it in the reader's 8 KiB pieces
            try:
                code = marshal.load(f)
            except (OSError, EOFError, ValueError, TypeError):  # the child failed
                pass
        if os.waitpid(pid, 0)[1] != 0:
            code = None
    else:
        os.close(r)
    if code is None:
        code = compile(source(), name, "exec")
    os.close(fd)
    return code


exec(_compile_apart(6, "<hutch-worker>"))
