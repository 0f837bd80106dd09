"""KServe / Open Inference Protocol v2: the server's side of the inference request and response,
in JSON and with the binary tensor data extension (Triton's "binary_tensor_data").

Binary extension, in short: the body is a JSON header of `Inference-Header-Content-Length` bytes
followed by raw tensor bytes (row-major, little-endian), one section per tensor whose
`parameters.binary_data_size` is set, in the order the tensors are listed. Outputs come back the
same way when the request asks for them with `parameters.binary_data: true` on an output or
`parameters.binary_data_output: true` on the request.
"""

from __future__ import annotations

import json
import math

import numpy as np

DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
          "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
DATATYPE_OF = {np.dtype(v).name: k for k, v in DTYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(Exception):
    """A request the server cannot serve; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def parse_infer_request(body: bytes | bytearray | memoryview, header_length: int | None):
    """(inputs {name: array}, outputs [(name, binary)] or None for all, binary_default, id)."""
    view = memoryview(body)
    if header_length is None:
        header_length = len(view)
    if header_length < 0 or header_length > len(view):
        raise _bad(f"{HEADER_LENGTH} is {header_length}, but the body has {len(view)} bytes")
    try:
        req = json.loads(bytes(view[:header_length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"request body is not valid JSON ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(req, dict):
        raise _bad("request body must be a JSON object")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("'parameters' must be an object")
    if "classification" in params:
        raise _bad("the classification extension is not supported")
    binary_default = bool(params.get("binary_data_output", False))
    tensors = req.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise _bad("'inputs' must be a non-empty list of tensors")

    inputs: dict[str, np.ndarray] = {}
    offset = header_length
    for t in tensors:
        name, shape, datatype = _tensor_head(t, "input")
        if name in inputs:
            raise _bad(f"input {name!r} is given twice")
        dtype = DTYPES[datatype]
        count = math.prod(shape)
        tparams = t.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise _bad(f"input {name!r}: 'parameters' must be an object")
        size = tparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _bad(f"input {name!r}: binary_data_size must be a non-negative integer")
            want = count * np.dtype(dtype).itemsize
            if size != want:
                raise _bad(f"input {name!r}: binary_data_size is {size}, but shape {shape} of {datatype} "
                           f"needs {want} bytes")
            if offset + size > len(view):
                raise _bad(f"input {name!r}: the body ends before its {size} bytes of binary data")
            arr = np.frombuffer(view[offset:offset + size], dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
            offset += size
        else:
            if "data" not in t:
                raise _bad(f"input {name!r} has neither 'data' nor binary_data_size")
            arr = _json_data(t["data"], dtype, shape, name, datatype)
        inputs[name] = arr
    if offset != len(view):
        raise _bad(f"the body has {len(view) - offset} bytes after the declared tensors")

    outputs = None
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list):
            raise _bad("'outputs' must be a list")
        outputs = []
        for o in req["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise _bad("each requested output needs a 'name'")
            op = o.get("parameters") or {}
            if not isinstance(op, dict):
                raise _bad(f"output {o['name']!r}: 'parameters' must be an object")
            if "classification" in op:
                raise _bad("the classification extension is not supported")
            outputs.append((o["name"], bool(op.get("binary_data", binary_default))))
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad("'id' must be a string")
    return inputs, outputs, binary_default, rid


def _tensor_head(t, kind: str):
    if not isinstance(t, dict):
        raise _bad(f"each {kind} must be an object with name, shape and datatype")
    name = t.get("name")
    if not isinstance(name, str):
        raise _bad(f"an {kind} has no 'name'")
    shape = t.get("shape")
    if (not isinstance(shape, list) or
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise _bad(f"{kind} {name!r}: 'shape' must be a list of non-negative integers")
    datatype = t.get("datatype")
    if datatype not in DTYPES:
        raise _bad(f"{kind} {name!r}: datatype {datatype!r} is not supported "
                   f"(one of {', '.join(DTYPES)}; this model takes UINT8)")
    return name, shape, datatype


def _json_data(data, dtype, shape, name, datatype) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except ValueError:
        raise _bad(f"input {name!r}: 'data' is ragged") from None
    count = math.prod(shape)
    if arr.size != count:
        raise _bad(f"input {name!r}: 'data' has {arr.size} values, shape {shape} needs {count}")
    if count == 0:
        return np.zeros(shape, dtype)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise _bad(f"input {name!r}: 'data' must hold numbers")
    kind = np.dtype(dtype).kind
    if kind in "iu":
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise _bad(f"input {name!r}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise _bad(f"input {name!r}: values outside {datatype}'s range {info.min}..{info.max}")
    return arr.astype(dtype).reshape(shape)


def encode_infer_response(model_name: str, model_version: str, request_id, results: dict,
                          requested: list) -> tuple[bytes, list, int | None]:
    """(json_header, binary_chunks, header_length or None when there is no binary part)."""
    outs, chunks = [], []
    for name, binary in requested:
        arr = np.ascontiguousarray(results[name])
        entry = {"name": name, "datatype": DATATYPE_OF[arr.dtype.name], "shape": list(arr.shape)}
        if binary:
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            entry["parameters"] = {"binary_data_size": arr.nbytes}
            chunks.append(memoryview(arr.reshape(-1).view(np.uint8)))
        else:
            entry["data"] = arr.reshape(-1).tolist()
        outs.append(entry)
    resp = {"model_name": model_name, "model_version": model_version, "outputs": outs}
    if request_id is not None:
        resp["id"] = request_id
    header = json.dumps(resp, separators=(",", ":")).encode()
    return header, chunks, (len(header) if chunks else None)
