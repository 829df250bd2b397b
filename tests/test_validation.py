"""The shared argument checks: what they accept, and the exact messages that tests elsewhere match."""

import re

import pytest

from keras_vit.validation import check_choice, check_int, check_positive_int, check_rate


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_check_rate_accepts_rates_and_returns_floats(value):
    assert check_rate(value, "dropout") == float(value)
    assert isinstance(check_rate(value, "dropout"), float)


@pytest.mark.parametrize("value", [1.0, -0.1, "0.1", None])
def test_check_rate_rejects(value):
    message = f"`dropout` must be a float in [0, 1). Received: dropout={value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_rate(value, "dropout")


def test_check_positive_int():
    assert check_positive_int(3, "num_heads") == 3
    for value in (0, -2, 2.0, True, "4", None):
        with pytest.raises(
            ValueError, match=re.escape(f"`num_heads` must be a positive int. Received: num_heads={value!r}")
        ):
            check_positive_int(value, "num_heads")


def test_check_int_with_a_lower_bound():
    assert check_int(0, "pad_token_id", minimum=0) == 0
    assert check_int(5, "beam_size", minimum=1) == 5
    for value, minimum in ((-1, 0), (0, 1), (1.0, 1), (False, 0)):
        message = f"`x` must be an int >= {minimum}. Received: x={value!r}"
        with pytest.raises(ValueError, match=re.escape(message)):
            check_int(value, "x", minimum=minimum)


def test_check_choice():
    modes = ("token", "gap")
    assert check_choice("gap", "pooling", modes) == "gap"
    message = "`pooling` must be one of ('token', 'gap'). Received: pooling='avg'"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_choice("avg", "pooling", modes)


def test_validation_imports_nothing_from_the_package():
    import ast
    import pathlib

    import keras_vit.validation as module

    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [name for name in imported if name and name.startswith("keras_vit")]
