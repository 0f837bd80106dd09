"""OpenBLAS on one thread while a fit runs (the fit's matrices are small)."""

class single_threaded_blas:
    """Context manager: OpenBLAS (numpy's and scipy's) on one thread inside, restored after.

    The fit's matrices are small (a few hundred rows): a second BLAS thread buys nothing, and on
    a busy machine its spin-waiting made fits 5-20x slower in our measurements (docs/fitting.md).
    Works on the loaded OpenBLAS libraries found in /proc/self/maps (Linux); elsewhere, or when
    the symbols are missing, it does nothing. The setting is process-wide while it is held.
    """

    _libs = None
    _names = (("openblas_set_num_threads", "openblas_get_num_threads"),
              ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
              ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
              ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"))

    @classmethod
    def _find(cls) -> list:
        if cls._libs is None:
            import ctypes

            found = []
            try:
                with open("/proc/self/maps") as f:
                    paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
            except OSError:
                paths = set()
            for path in sorted(paths):
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    continue
                for set_name, get_name in cls._names:
                    if hasattr(lib, set_name) and hasattr(lib, get_name):
                        found.append((getattr(lib, set_name), getattr(lib, get_name)))
                        break
            cls._libs = found
        return cls._libs

    def __enter__(self):
        self._saved = [(set_, get()) for set_, get in self._find()]
        for set_, _ in self._saved:
            set_(1)
        return self

    def __exit__(self, *exc):
        for set_, n in self._saved:
            set_(int(n))
        return False
