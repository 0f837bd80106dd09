"""The DualPM inference subprocess: ONNX Runtime behind the KServe / Open Inference Protocol v2
over HTTP. `python -m model_server` or `dualpm serve`; see docs/server.md.

Imports dualpm_addon (shared tensor checks) but nothing imports this package from dualpm_addon:
the extension reaches it only as a subprocess, through dualpm_addon.client.
"""
