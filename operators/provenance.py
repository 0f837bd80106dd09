"""Provenance custom properties on every generated object: what made it, from which file, how.

Plain strings and numbers only (ID properties survive .blend saves and go to glTF `extras` when
exported with extras), the parameters as one JSON string.
"""

from __future__ import annotations

import json

KEYS = ("dualpm_version", "dualpm_model_version", "dualpm_input_file", "dualpm_input_sha256",
        "dualpm_parameters", "dualpm_role")


def tag(obj, provenance: dict, role: str) -> None:
    obj["dualpm_version"] = str(provenance.get("dualpm_version", ""))
    obj["dualpm_model_version"] = str(provenance.get("model_version", ""))
    obj["dualpm_input_file"] = str(provenance.get("input_file", ""))
    obj["dualpm_input_sha256"] = str(provenance.get("input_sha256", ""))
    obj["dualpm_parameters"] = json.dumps(provenance.get("parameters", {}), sort_keys=True)
    obj["dualpm_role"] = role


def read(obj) -> dict:
    out = {k: obj.get(k) for k in KEYS if k in obj}
    if "dualpm_parameters" in out:
        out["dualpm_parameters"] = json.loads(out["dualpm_parameters"])
    return out


def role(obj) -> str | None:
    return obj.get("dualpm_role") if obj is not None else None
