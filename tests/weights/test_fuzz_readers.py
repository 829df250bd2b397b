"""Fuzzing the weight readers: mutated files either load exactly as the reference reader loads them, or raise
CheckpointError; never another exception, a crash or a hang.

Mutations of valid files: truncation at random points, random byte flips, and
rewritten header fields (shapes, dtypes, offsets, header length, metadata,
repeated keys). The reference for safetensors is the `safetensors` library, for
`.npz` NumPy's `np.load`. A few hundred seeded cases run in the fast suite,
thousands under `slow`.
"""

import contextlib
import json
import signal
import struct
import zipfile

import numpy as np
import pytest
import safetensors
import safetensors.numpy

from keras_vit.weights import CheckpointError, load_pretrained, read_safetensors, write_safetensors
from keras_vit.weights.npz import read_npz
from keras_vit.weights.timm_keys import model_state_dict

SECONDS_PER_CASE = 5
DTYPES = [
    "F32",
    "F16",
    "F64",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "U16",
    "U32",
    "U64",
    "BOOL",
    "C64",
    "BF16",
    "F8_E4M3",
    "Q4",
    "",
]


@contextlib.contextmanager
def time_bound(case: str):
    def hang(signum, frame):
        raise TimeoutError(f"the reader hung on case {case}")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_CASE)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def base_safetensors(tmp_path) -> list[bytes]:
    rng = np.random.default_rng(0)
    tensors = {
        "blocks.0.attn.qkv.weight": rng.standard_normal((6, 4)).astype("float32"),
        "half": rng.standard_normal((3,)).astype("float16"),
        "ids": np.arange(5, dtype="int64"),
        "mask": np.array([True, False, True]),
        "bytes": np.arange(7, dtype="uint8"),
        "empty": np.zeros((0, 2), "float32"),
        "scalar": np.array(2.5, "float64"),
    }
    ours, reference = tmp_path / "ours.safetensors", tmp_path / "reference.safetensors"
    write_safetensors(str(ours), tensors, {"producer": "test"})
    safetensors.numpy.save_file(tensors, str(reference), metadata={"format": "np"})
    return [ours.read_bytes(), reference.read_bytes()]


def split(data: bytes) -> tuple[dict, bytes]:
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join(header, buffer: bytes, length_delta: int = 0) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", max(len(raw) + length_delta, 0) % 2**64) + raw + buffer


def rewrite_header(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One header field rewritten, the header length kept consistent unless that is the field."""
    header, buffer = split(data)
    names = [n for n in header if n != "__metadata__"]
    name = names[rng.integers(len(names))]
    info = header[name]
    field = ["shape", "dtype", "offsets", "length", "duplicate", "metadata", "drop"][rng.integers(7)]
    if field == "shape":
        choices = [-1, 0, 1, 3, 2**31, 2**62, 2**64 + 1, 1.5, True, "4", None]
        shape = list(info["shape"])
        if shape and rng.random() < 0.7:
            shape[rng.integers(len(shape))] = choices[rng.integers(len(choices))]
        else:
            shape.append(choices[rng.integers(len(choices))])
        info["shape"] = shape
    elif field == "dtype":
        info["dtype"] = DTYPES[rng.integers(len(DTYPES))]
    elif field == "offsets":
        begin, end = info["data_offsets"]
        kind = rng.integers(5)
        delta = int(rng.integers(-9, 10))
        info["data_offsets"] = [
            [begin + delta, end + delta],
            [begin, end + delta],
            [end, begin],
            [begin, 2**63 + delta],
            [begin, end, end],
        ][kind]
    elif field == "length":
        return join(header, buffer, length_delta=[1, -1, 8, -8, 2**40, 2**63][rng.integers(6)]), field
    elif field == "duplicate":
        raw = json.dumps(header).encode()
        copy = json.dumps({name: info})[1:-1].encode()
        return join(raw[:-1] + b"," + copy + b"}", buffer), field
    elif field == "metadata":
        header["__metadata__"] = [{"a": 1}, ["x"], "s", None, {"k": "v"}, {"k": None}][rng.integers(6)]
    else:
        del header[name]
    return join(header, buffer), field


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    kind = rng.integers(3)
    if kind == 0:
        cut = int(rng.integers(len(data)))
        return data[:cut], f"truncate at {cut}"
    if kind == 1:
        out = bytearray(data)
        header_end = 8 + int.from_bytes(data[:8], "little")
        for _ in range(int(rng.integers(1, 4))):
            limit = header_end if rng.random() < 0.7 else len(out)  # the header is where parsing can go wrong
            out[int(rng.integers(limit))] ^= 1 << int(rng.integers(8))
        return bytes(out), "flip bytes"
    return rewrite_header(data, rng)


def reference_safetensors(path: str):
    """The safetensors library's arrays, or None where it refuses (or cannot represent the dtype in NumPy)."""
    try:
        return safetensors.numpy.load_file(path)
    except (safetensors.SafetensorError, TypeError, AttributeError, ValueError):
        return None


def same_arrays(ours: dict, reference: dict) -> bool:
    """Bit-equal arrays; bfloat16 (which the reference gives when ml_dtypes is loaded) is read as float32 by us."""
    reference = {k: v.astype("float32") if v.dtype.name == "bfloat16" else v for k, v in reference.items()}
    return set(ours) == set(reference) and all(
        ours[k].dtype == reference[k].dtype
        and ours[k].shape == reference[k].shape
        and ours[k].tobytes() == reference[k].tobytes()
        for k in reference
    )


def fuzz_safetensors(tmp_path, cases: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    bases = base_safetensors(tmp_path)
    path = tmp_path / "case.safetensors"
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(cases):
        data, how = mutate(bases[case % len(bases)], rng)
        path.write_bytes(data)
        label = f"{seed}/{case} ({how})"
        try:
            with time_bound(label):
                ours = read_safetensors(str(path))[0]
        except CheckpointError as error:
            ours = error
        reference = reference_safetensors(str(path))
        if isinstance(ours, CheckpointError):
            outcomes["refused"] += 1
            assert str(path) in str(ours), label
            if reference is not None:  # the one deliberate difference: a repeated key
                assert "repeats the key" in str(ours), f"{label}: the reference loads what we refuse: {ours}"
        else:
            outcomes["loaded"] += 1
            assert reference is not None, f"{label}: we load a file the reference refuses"
            assert same_arrays(ours, reference), f"{label}: arrays differ from the reference"
    return outcomes


def fuzz_npz(tmp_path, cases: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    values = {"embedding/kernel": rng.standard_normal((2, 2, 3, 4)).astype("float32"), "cls": np.ones((1, 1, 4), "f2")}
    stored, compressed = tmp_path / "stored.npz", tmp_path / "compressed.npz"
    np.savez(stored, **values)
    np.savez_compressed(compressed, **values)
    bases = [stored.read_bytes(), compressed.read_bytes()]
    path = tmp_path / "case.npz"
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(cases):
        data = bytearray(bases[case % 2])
        if rng.random() < 0.3:
            data = data[: int(rng.integers(len(data)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        label = f"npz {seed}/{case}"
        try:
            with time_bound(label):
                ours = read_npz(str(path))
        except CheckpointError as error:
            assert str(path) in str(error), label
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        with np.load(path, allow_pickle=False) as reference:  # it must accept whatever we accept
            assert same_arrays(ours, {k: reference[k] for k in reference.files}), label
    return outcomes


def test_safetensors_fuzz(tmp_path):
    outcomes = fuzz_safetensors(tmp_path, cases=400, seed=1)
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 200, outcomes  # both branches exercised


def test_npz_fuzz(tmp_path):
    outcomes = fuzz_npz(tmp_path, cases=200, seed=1)
    assert outcomes["refused"] > 50, outcomes


def test_loader_fuzz_leaves_the_model_untouched_or_loads_exactly(tiny, tmp_path):
    """Through `load_pretrained`: a mutated timm file loads the same weights or changes nothing."""
    source, model = tiny(seed=1), tiny(seed=2)
    good = tmp_path / "good.safetensors"
    write_safetensors(str(good), model_state_dict(source))
    before = model_state_dict(model)
    rng = np.random.default_rng(3)
    path = tmp_path / "case.safetensors"
    for case in range(60):
        data, how = mutate(good.read_bytes(), rng)
        path.write_bytes(data)
        try:
            with time_bound(f"loader {case} ({how})"):
                load_pretrained(model, str(path))
        except CheckpointError:
            assert same_arrays(model_state_dict(model), before), f"case {case} ({how}) half-loaded the model"
            continue
        loaded = model_state_dict(model)
        reference = reference_safetensors(str(path))
        assert reference is not None
        for key, value in loaded.items():  # what was loaded is what the reference reads (head may stay)
            if key in reference and reference[key].shape == value.shape:
                np.testing.assert_array_equal(value, reference[key].astype(value.dtype), err_msg=f"case {case}")
        before = loaded


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_safetensors_fuzz_long(seed, tmp_path):
    fuzz_safetensors(tmp_path, cases=3000, seed=seed)


@pytest.mark.slow
def test_npz_fuzz_long(tmp_path):
    fuzz_npz(tmp_path, cases=3000, seed=11)


def test_a_zip_member_claiming_a_huge_size_is_refused(tmp_path):
    """The zip directory is untrusted too: a member claiming more bytes than deflate can produce is refused."""
    path = tmp_path / "w.npz"
    np.savez_compressed(path, cls=np.zeros((4, 4), "float32"))
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", 2**32 - 1)  # uncompressed size in the central directory
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.infolist()[0].file_size == 2**32 - 1
    with pytest.raises(CheckpointError, match=r"array 'cls' claims 4294967295 bytes from \d+ stored bytes"):
        read_npz(str(path))
