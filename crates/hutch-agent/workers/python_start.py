import posix as _p, marshal as _m, _frozen_importlib_external as _e; _p.pread(5, 4, 0) == _e.MAGIC_NUMBER or _p._exit(76); exec(_m.loads(_p.pread(5, 1 << 20, 4)))
