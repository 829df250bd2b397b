"""Every code block of docs/serving-production.md runs or parses as written."""

import contextlib
import io
import json
import os
import re
import shlex

import pytest

from keras_vit.export import cli  # noqa: F401 - defines the serve flags
from keras_vit.export.batching import parse_batching_parameters

DOC = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "serving-production.md"
)


def blocks(language):
    with open(DOC) as f:
        text = f.read()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_python_block_runs_and_batches(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (code,) = blocks("python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, DOC, "exec"), {"__name__": "__docs__"})
    predictions, stats = out.getvalue().strip().splitlines()
    assert predictions.startswith("3 [") and "'logits'" in predictions and "'probabilities'" in predictions
    assert stats == "{8: 1}"  # three examples, one batch, padded to the allowed size 8


def test_bash_lines_are_valid_commands():
    from absl import flags

    from benchmarks import serving

    lines = [line for block in blocks("bash") for line in block.strip().splitlines()]
    assert lines
    for line in lines:
        words = shlex.split(line)
        if words[:2] == ["keras-vit", "serve"]:
            for word in words[2:]:
                name, _, value = word[2:].partition("=")
                assert word.startswith("--") and name in flags.FLAGS, word
                if value:
                    flags.FLAGS[name].parser.parse(value)
                else:
                    assert flags.FLAGS[name].flag_type() == "bool", word
        else:
            assert words[:3] == ["python", "-m", "benchmarks.serving"], line
            args = serving.build_parser().parse_args(words[3:])
            assert args.clients == "1,4,16" and args.seconds == 10


def test_parameters_file_and_status_examples_parse():
    (text,) = blocks("text")
    params = parse_batching_parameters(text, "docs")
    assert params.max_batch_size == 16 and params.allowed_batch_sizes == (4, 8, 16)
    (status,) = blocks("json")
    assert [e["state"] for e in json.loads(status)["model_version_status"]] == ["AVAILABLE", "END"]
    with pytest.raises(ValueError, match=r"Received: max_batch_size=0"):
        parse_batching_parameters("max_batch_size { value: 0 }")
