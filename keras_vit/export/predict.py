"""TF Serving's REST JSON request/response formats.

REST (https://www.tensorflow.org/tfx/serving/api_rest):
- row format `{"instances": [...]}`: one entry per example; with one input the
  entry is its value, else an object of named inputs. Answer `{"predictions": [...]}`
  (a value per example with one output, else an object per example).
- columnar format `{"inputs": value | {name: value}}`; answer `{"outputs": value | {name: value}}`.
- `{"b64": "..."}` is a base64 string value; string outputs whose name ends in
  `_bytes` are returned the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from keras_vit.export.errors import ServingError, invalid
from keras_vit.export.loaded_version import LoadedVersion

DEFAULT_SIGNATURE = "serving_default"


def _decode_values(value: Any) -> Any:
    """Replaces `{"b64": ...}` objects by their bytes, recursively."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            if not isinstance(value["b64"], str):
                raise invalid('A {"b64": ...} value must hold a base64 string.')
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise invalid('Unable to base64 decode a {"b64": ...} value.') from None
        raise invalid(f'Unexpected object {sorted(value)} inside a tensor value; only {{"b64": ...}} is allowed.')
    if isinstance(value, list):
        return [_decode_values(v) for v in value]
    return value


def _to_array(value: Any, name: str) -> np.ndarray:
    value = _decode_values(value)
    try:
        array = np.array(value)
    except ValueError:
        raise invalid(f"Input '{name}' is ragged: every example must have the same shape.") from None
    if array.dtype.kind in ("S", "U", "O"):  # strings: keep bytes whole (fixed-width "S" drops trailing NULs)
        array = np.array(value, dtype=object)
        if not all(isinstance(v, (bytes, str)) for v in array.ravel()):
            raise invalid(f"Input '{name}' is ragged or mixes types: every example must have the same shape and type.")
        array = np.vectorize(lambda s: s.encode("utf-8") if isinstance(s, str) else s, otypes=[object])(array)
    return array


def parse_predict_body(body: bytes, loaded: LoadedVersion) -> tuple[str, dict[str, np.ndarray], str]:
    """Parses a `:predict` JSON body; returns (signature name, input arrays, "row" or "columnar")."""
    try:
        request = json.loads(body)
    except UnicodeDecodeError:
        raise invalid("JSON Parse error: the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise invalid(f"JSON Parse error: {error.msg} at offset: {error.pos}") from None
    if not isinstance(request, dict):
        raise invalid("JSON Value: the request must be a JSON object with 'instances' or 'inputs'.")
    signature = request.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise invalid(f"'signature_name' must be a string. Received: {signature!r}")
    if signature not in loaded.signatures:
        raise invalid(
            f'Serving signature name: "{signature}" not found in signature def. Available: {sorted(loaded.signatures)}'
        )
    names = sorted(loaded.input_specs(signature))
    if ("instances" in request) == ("inputs" in request):
        raise invalid(
            "Missing 'inputs' or 'instances' key"
            if "instances" not in request
            else "Request must contain only one of 'instances' or 'inputs', not both."
        )
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid("'instances' must be a non-empty JSON list, one entry per example.")
        named = all(isinstance(i, dict) and set(i) != {"b64"} for i in instances)
        if named:
            columns = {}
            for key in names:
                if not all(key in i for i in instances):
                    raise invalid(f"Every instance must have the named input '{key}' of signature '{signature}'.")
                columns[key] = [i[key] for i in instances]
            unexpected = sorted({k for i in instances for k in i} - set(names))
            if unexpected:
                raise invalid(f"Unexpected input(s) {unexpected}; signature '{signature}' takes {names}.")
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise invalid(
                f"Signature '{signature}' takes several inputs {names}: each instance must be an object "
                "of named inputs."
            )
        return signature, {k: _to_array(v, k) for k, v in columns.items()}, "row"
    inputs = request["inputs"]
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        return signature, {k: _to_array(v, k) for k, v in inputs.items()}, "columnar"
    if len(names) != 1:
        raise invalid(f"Signature '{signature}' takes several inputs {names}: 'inputs' must be an object of them.")
    return signature, {names[0]: _to_array(inputs, names[0])}, "columnar"


def _json_value(name: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        if name.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object])(array).tolist()
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


def format_predict_response(outputs: dict[str, np.ndarray], style: str) -> dict[str, Any]:
    """The JSON answer: `{"predictions": ...}` for row requests, `{"outputs": ...}` for columnar ones."""
    names = sorted(outputs)
    if style == "columnar":
        if len(names) == 1:
            return {"outputs": _json_value(names[0], outputs[names[0]])}
        return {"outputs": {n: _json_value(n, outputs[n]) for n in names}}
    if len(names) == 1:
        return {"predictions": _json_value(names[0], outputs[names[0]])}
    batch = {len(outputs[n]) for n in names}
    if len(batch) != 1:
        raise ServingError("INVALID_ARGUMENT", "Outputs have different batch sizes; use the columnar 'inputs' format.")
    columns = {n: _json_value(n, outputs[n]) for n in names}
    return {"predictions": [{n: columns[n][i] for n in names} for i in range(batch.pop())]}
