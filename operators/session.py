"""One inference backend per Blender session, kept between clicks (the server keeps the model loaded).

The backend follows the preferences: a server subprocess on Blender's own Python or on another
Python, a remote v2 server, or ONNX Runtime in process. Changing a preference that matters makes
the next request start a new backend; unregistering the add-on stops the server.
"""

from __future__ import annotations

import os
import sys
import threading

from ._core import core

_lock = threading.Lock()
_backend = None
_key = None
_template = None


def extension_site_dirs() -> list[str]:
    """Where Blender installed extension wheels (extensions/.local/.../site-packages), if any.

    Blender's interpreter has them on sys.path; a child `python -m model_server` on Blender's
    Python does not, so a server started on it gets them on PYTHONPATH (Blender itself ignores
    that variable, and a server on *another* Python must not get them: they would shadow its
    own onnxruntime-gpu)."""
    marker = os.path.join("extensions", ".local")
    return [p for p in sys.path if marker in p and os.path.isdir(p)]


_env_lock = threading.Lock()


def _blender_python_client():
    client = core("client")

    class BlenderPythonClient(client.InferenceClient):
        """A client whose local server (first start and restarts) sees the extension's wheels."""

        def _start_local(self):
            extra = extension_site_dirs()
            if not extra:
                return super()._start_local()
            with _env_lock:
                old = os.environ.get("PYTHONPATH")
                os.environ["PYTHONPATH"] = os.pathsep.join(extra + ([old] if old else []))
                try:
                    return super()._start_local()
                finally:
                    if old is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = old

    return BlenderPythonClient


def make_backend(settings: dict):
    """A new, not yet started predictor for the settings (preferences.settings_dict)."""
    err = core("errors").DualPMError
    mode = settings.get("inference", "SUBPROCESS")
    model = settings.get("model_path") or None
    device = settings.get("device", "auto")
    if model is not None and not os.path.isfile(model):
        raise err(f"model {model}: no such file (Preferences > Add-ons > DualPM > Model)")
    if mode == "IN_PROCESS":
        return _LazyRunner(model, device)
    client = core("client")
    timeout = float(settings.get("start_timeout", 60.0))
    if mode == "REMOTE":
        url = (settings.get("server_url") or "").strip()
        if not url:
            raise err("no server URL set (Preferences > Add-ons > DualPM > URL)")
        return client.InferenceClient(url=url, token=settings.get("server_token") or None, start_timeout=timeout)
    if mode == "PYTHON":
        python = settings.get("python_path") or ""
        if not python or not os.path.isfile(python):
            raise err(f"Python {python or '(not set)'}: no such file (Preferences > Add-ons > DualPM > Python)")
        return client.InferenceClient(python=python, model=model, device=device, start_timeout=timeout)
    return _blender_python_client()(python=sys.executable, model=model, device=device, start_timeout=timeout)


class _LazyRunner:
    """inference.Runner created on first use (on the worker thread: loading a model takes time)."""

    def __init__(self, model, device):
        self._args = (model, device)
        self._runner = None
        self.metadata = {}

    def start(self):
        if self._runner is None:
            self._runner = core("inference").Runner(*self._args)
            self.metadata = dict(self._runner.metadata)
        return self

    @property
    def input_size(self):
        return self.start()._runner.input_size

    def predict(self, image, mask=None):
        return self.start()._runner.predict(image, mask)

    def cancel(self):
        pass  # checked between stages; an ONNX run of a 160x160 crop is short

    def close(self):
        self._runner = None


def _settings_key(settings: dict) -> tuple:
    return tuple(settings.get(k) for k in ("inference", "python_path", "server_url", "server_token",
                                           "device", "model_path"))


def backend(settings: dict):
    """The session's predictor for these settings (created, not necessarily started)."""
    global _backend, _key
    key = _settings_key(settings)
    with _lock:
        if _backend is not None and key == _key:
            return _backend
        old = _backend
        _backend, _key = make_backend(settings), key
    if old is not None:
        _close(old)
    return _backend


def discard(b) -> None:
    """Forget a backend that failed to start, so the next click tries afresh."""
    global _backend, _key
    with _lock:
        if _backend is b:
            _backend, _key = None, None
    _close(b)


def _close(b) -> None:
    try:
        b.close()
    except Exception:  # closing a dead server must not fail the caller
        pass


def shutdown() -> None:
    global _backend, _key
    with _lock:
        b, _backend, _key = _backend, None, None
    if b is not None:
        _close(b)


def template():
    """The shipped reference template, loaded once (the fit's index is cached per template)."""
    global _template
    if _template is None:
        _template = core("template").load_default()
    return _template
