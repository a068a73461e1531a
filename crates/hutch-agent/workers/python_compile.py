# hutch python interpreter worker: its code compiled ahead, once per server.
#
# Run by the server as `python3 -I -S -c <this file>` with the interpreter of the `default`
# image, as an unprivileged user: reads the worker's code (python_worker.py) on stdin and
# writes the interpreter's magic number (4 bytes) and the code, marshalled, on stdout.
# python_start.py checks the magic number before it unmarshals anything.
import importlib.util
import marshal
import sys

code = compile(sys.stdin.buffer.read(), "<hutch-worker>", "exec")
sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER + marshal.dumps(code))
