"""Server-side request batching with TF Serving's `--enable_batching` semantics.

Concurrent requests to the same model version and signature wait in one queue;
a batch closes when the next request would not fit in `max_batch_size`, or when
its first request has waited `batch_timeout_micros`. `num_batch_threads`
threads each run one closed batch: inputs are concatenated along the batch
axis, padded (by repeating the first example) up to the next entry of
`allowed_batch_sizes`, run in one signature call, and the outputs are split
back per request. Requests larger than `max_batch_size` are refused; with
`enable_large_batch_splitting` a request is split into batches of
`max_execution_batch_size`. A queue holding `max_enqueued_batches` batches
refuses new work with UNAVAILABLE, as TF Serving does.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from keras_vit.export.errors import ServingError, invalid
from keras_vit.export.loaded_version import LoadedVersion, check_inputs, run_signature

_INT_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's `BatchingParameters`; the defaults are TF Serving's when no file is given.

    Args:
        max_batch_size: largest request accepted, and the batch size run unless splitting. Defaults to 1000.
        batch_timeout_micros: longest wait for a batch to fill, in microseconds. Defaults to 0.
        num_batch_threads: batches run in parallel. Defaults to the number of CPUs.
        max_enqueued_batches: batches a queue holds before refusing work. Defaults to 10.
        allowed_batch_sizes: increasing sizes a batch is padded up to; the last must equal
            `max_execution_batch_size` (or `max_batch_size`). Defaults to () (no padding).
        pad_variable_length_inputs: pad inputs whose non-batch dimensions differ to a common
            shape (with each input's first value) so they share a batch. Defaults to False.
        enable_large_batch_splitting: split requests larger than `max_execution_batch_size`
            across several batches. Defaults to False.
        max_execution_batch_size: batch size run when splitting. Defaults to `max_batch_size`.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    def __post_init__(self):
        for name in _INT_FIELDS:
            value = getattr(self, name)
            least = 0 if name == "batch_timeout_micros" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"Batching parameter `{name}` must be an int >= {least}. Received: {name}={value!r}")
        execution = self.execution_batch_size
        if self.max_execution_batch_size is not None and not (1 <= execution <= self.max_batch_size):
            raise ValueError(
                "Batching parameter `max_execution_batch_size` must be in [1, max_batch_size="
                f"{self.max_batch_size}]. Received: max_execution_batch_size={self.max_execution_batch_size!r}"
            )
        sizes = tuple(self.allowed_batch_sizes)
        object.__setattr__(self, "allowed_batch_sizes", sizes)
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                raise ValueError(
                    f"Batching parameter `allowed_batch_sizes` must be positive and increasing. "
                    f"Received: allowed_batch_sizes={list(sizes)}"
                )
            if sizes[-1] != execution:
                raise ValueError(
                    f"The last entry of `allowed_batch_sizes` must equal the batch size run ({execution}). "
                    f"Received: allowed_batch_sizes={list(sizes)}"
                )

    @property
    def execution_batch_size(self) -> int:
        """The largest batch one call runs."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    def padded_size(self, size: int) -> int:
        """The allowed batch size a batch of `size` examples is padded up to."""
        return next((s for s in self.allowed_batch_sizes if s >= size), size)


def _batching_message_class():
    """TF Serving's `BatchingParameters` proto class, or the same fields declared here when it is not installed."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="keras_vit/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", "Int64Value"),
        ("batch_timeout_micros", "Int64Value"),
        ("max_enqueued_batches", "Int64Value"),
        ("num_batch_threads", "Int64Value"),
        ("thread_pool_name", "StringValue"),
        ("enable_large_batch_splitting", "BoolValue"),
        ("max_execution_batch_size", "Int64Value"),
    ]
    for number, (name, kind) in enumerate(wrapped, start=1):
        message.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{kind}",
            label=field.LABEL_OPTIONAL,
        )
    message.field.add(name="allowed_batch_sizes", number=20, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=21, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    message.field.add(name="batch_padding_policy", number=22, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def parse_batching_parameters(text: str, source: str = "<text>") -> BatchingParameters:
    """Parses TF Serving's text-format `BatchingParameters` (the `--batching_parameters_file` contents)."""
    from google.protobuf import text_format

    proto = _batching_message_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as error:
        raise ValueError(f"{source} is not a valid TF Serving batching parameters file: {error}") from None
    kwargs: dict[str, Any] = {}
    for name in (*_INT_FIELDS, "max_execution_batch_size", "enable_large_batch_splitting"):
        if proto.HasField(name):
            kwargs[name] = getattr(proto, name).value
    kwargs["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    kwargs["pad_variable_length_inputs"] = proto.pad_variable_length_inputs
    policy = getattr(proto, "batch_padding_policy", "")
    if policy not in ("", "PAD_UP"):
        raise ValueError(f"{source}: only batch_padding_policy 'PAD_UP' is served. Received: {policy!r}")
    try:
        return BatchingParameters(**kwargs)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def read_batching_parameters(path: str) -> BatchingParameters:
    """Reads a `--batching_parameters_file`."""
    if not os.path.isfile(path):
        raise ValueError(f"No such batching parameters file. Received: --batching_parameters_file={path}")
    with open(path) as f:
        return parse_batching_parameters(f.read(), repr(path))


@dataclasses.dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    future: Future
    deadline: float | None


@dataclasses.dataclass
class _Batch:
    tasks: list[_Task]
    size: int
    opened: float


class Batcher:
    """Queues requests per (model version, signature, input shapes) and runs them in shared batches.

    Args:
        params: the batching parameters.
        run: runs one signature call, `run(loaded, signature, inputs) -> outputs`. Defaults to `run_signature`.

    `stats` counts the batches run by their (padded) size.
    """

    def __init__(
        self,
        params: BatchingParameters,
        run: Callable[[LoadedVersion, str, dict[str, np.ndarray]], dict[str, np.ndarray]] = run_signature,
    ):
        self.params = params
        self._run = run
        self._condition = threading.Condition()
        self._queues: dict[tuple, collections.deque[_Batch]] = {}
        self._owners: dict[tuple, tuple[LoadedVersion, str]] = {}
        self._stopped = False
        self.stats: collections.Counter[int] = collections.Counter()
        self._threads = [
            threading.Thread(target=self._work, name=f"keras-vit-batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def run(
        self, loaded: LoadedVersion, signature: str, inputs: dict[str, np.ndarray], timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """Answers one request through the shared batches; DEADLINE_EXCEEDED after `timeout` seconds."""
        checked = check_inputs(loaded, signature, inputs)
        size = len(next(iter(checked.values())))
        limit = self.params.max_batch_size
        if size > limit:
            raise invalid(
                f"Task size {size} is larger than maximum input batch size {limit} "
                "(max_batch_size in --batching_parameters_file); send fewer examples per request."
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        step = self.params.execution_batch_size
        futures = [self._submit(loaded, signature, _rows(checked, i, i + step), deadline) for i in range(0, size, step)]
        parts = []
        for future in futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                parts.append(future.result(remaining))
            except TimeoutError:
                for pending in futures:
                    pending.cancel()  # not yet run: it never will be
                raise ServingError("DEADLINE_EXCEEDED", f"Deadline exceeded after {timeout * 1000:.0f} ms.") from None
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _submit(self, loaded, signature, inputs, deadline) -> Future:
        task = _Task(inputs, len(next(iter(inputs.values()))), Future(), deadline)
        key = (id(loaded), signature, self._shape_key(inputs))
        with self._condition:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "The server is shutting down.")
            queue = self._queues.setdefault(key, collections.deque())
            self._owners[key] = (loaded, signature)
            last = queue[-1] if queue else None
            if last is not None and last.size + task.size <= self.params.execution_batch_size:
                last.tasks.append(task)
                last.size += task.size
            elif len(queue) >= self.params.max_enqueued_batches:
                raise ServingError(
                    "UNAVAILABLE",
                    "The batch scheduling queue to which this task was submitted is full "
                    f"(max_enqueued_batches={self.params.max_enqueued_batches}).",
                )
            else:
                queue.append(_Batch([task], task.size, time.monotonic()))
            self._condition.notify()
        return task.future

    def _shape_key(self, inputs: dict[str, np.ndarray]) -> tuple:
        """Requests share a batch only when their inputs concatenate (or pad, when allowed) to one tensor."""
        if self.params.pad_variable_length_inputs:
            return tuple((name, a.dtype.str, a.ndim) for name, a in sorted(inputs.items()))
        return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))

    def _ready_batch(self, now: float) -> tuple[tuple | None, float | None]:
        """The key of a queue whose head batch may run now, else the seconds until one may."""
        timeout = self.params.batch_timeout_micros / 1e6
        wait = None
        for key, queue in self._queues.items():
            if not queue:
                continue
            head = queue[0]
            if len(queue) > 1 or head.size >= self.params.execution_batch_size or now - head.opened >= timeout:
                return key, None
            left = head.opened + timeout - now
            wait = left if wait is None else min(wait, left)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._condition:
                while True:
                    if self._stopped:
                        return
                    key, wait = self._ready_batch(time.monotonic())
                    if key is not None:
                        batch = self._queues[key].popleft()
                        loaded, signature = self._owners[key]
                        if not self._queues[key]:
                            del self._queues[key], self._owners[key]  # no reference kept to a swapped-out version
                        break
                    self._condition.wait(wait)
            self._execute(loaded, signature, batch)

    def _execute(self, loaded: LoadedVersion, signature: str, batch: _Batch) -> None:
        now = time.monotonic()
        tasks = []
        for task in batch.tasks:
            if not task.future.set_running_or_notify_cancel():
                continue  # its caller gave up (deadline)
            if task.deadline is not None and now > task.deadline:
                task.future.set_exception(ServingError("DEADLINE_EXCEEDED", "Deadline exceeded while queued."))
                continue
            tasks.append(task)
        if not tasks:
            return
        try:
            outputs, size = self._run_padded(loaded, signature, [t.inputs for t in tasks])
        except ServingError as error:
            if len(tasks) > 1 and error.code == "INVALID_ARGUMENT":
                self._run_alone(loaded, signature, tasks)  # one bad example must not fail its neighbours
                return
            for task in tasks:
                task.future.set_exception(error)
            return
        except Exception as error:  # noqa: BLE001 - every waiting request gets an answer
            for task in tasks:
                task.future.set_exception(ServingError("INTERNAL", f"{type(error).__name__}: {error}"))
            return
        start = 0
        for task in tasks:
            stop = start + task.size
            task.future.set_result({name: value[start:stop] for name, value in outputs.items()})
            start = stop

    def _run_alone(self, loaded: LoadedVersion, signature: str, tasks: list[_Task]) -> None:
        for task in tasks:
            try:
                task.future.set_result(self._run_padded(loaded, signature, [task.inputs])[0])
            except ServingError as error:
                task.future.set_exception(error)
            except Exception as error:  # noqa: BLE001
                task.future.set_exception(ServingError("INTERNAL", f"{type(error).__name__}: {error}"))

    def _run_padded(self, loaded, signature, inputs: list[dict[str, np.ndarray]]) -> tuple[dict, int]:
        """One signature call on the concatenated, padded inputs; outputs cut to the real examples."""
        size = sum(len(next(iter(i.values()))) for i in inputs)
        padded = self.params.padded_size(size)
        merged = {}
        for name in inputs[0]:
            parts = [i[name] for i in inputs]
            if self.params.pad_variable_length_inputs:
                parts = _pad_to_common_shape(parts)
            value = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if padded > size:
                value = np.concatenate([value, np.repeat(value[:1], padded - size, axis=0)])
            merged[name] = value
        outputs = self._run(loaded, signature, merged)
        with self._condition:
            self.stats[padded] += 1
        for name, value in outputs.items():
            if np.ndim(value) == 0 or len(value) != padded:
                raise ServingError(
                    "FAILED_PRECONDITION",
                    f"Output '{name}' of signature '{signature}' has no batch dimension of size {padded}; "
                    "serve this model without --enable_batching.",
                )
        return {name: value[:size] for name, value in outputs.items()}, size

    def stop(self) -> None:
        """Stops the batch threads; queued requests are answered UNAVAILABLE."""
        with self._condition:
            self._stopped = True
            queued = [task for queue in self._queues.values() for batch in queue for task in batch.tasks]
            self._queues.clear()
            self._owners.clear()
            self._condition.notify_all()
        for task in queued:
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(ServingError("UNAVAILABLE", "The server is shutting down."))
        for thread in self._threads:
            thread.join(timeout=10)


def _rows(inputs: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: value[start:stop] for name, value in inputs.items()}


def _pad_to_common_shape(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Pads each array at the end of every non-batch dimension, with its own first value, to the largest shape."""
    target = np.max([p.shape for p in parts], axis=0)[1:]
    padded = []
    for part in parts:
        widths = [(0, 0)] + [(0, int(t - s)) for t, s in zip(target, part.shape[1:])]
        if any(w for _, w in widths):
            fill = part.flat[0] if part.size else 0
            part = np.pad(part, widths, constant_values=fill) if part.dtype != object else _pad_object(part, widths)
        padded.append(part)
    return padded


def _pad_object(part: np.ndarray, widths: list[tuple[int, int]]) -> np.ndarray:
    out = np.full([s + w for s, (_, w) in zip(part.shape, widths)], part.flat[0], dtype=object)
    out[tuple(slice(0, s) for s in part.shape)] = part
    return out
