"""The example's algorithmic task: held-out exact match after a few CPU minutes (slow)."""

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "sequence_transformer.py"


def _example():
    spec = importlib.util.spec_from_file_location("sequence_transformer_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reversal_reaches_99_percent_exact_match_sinusoidal():
    metrics = _example().run(position_encoding="sinusoidal", verbose=0)
    assert metrics["exact_match_greedy"] >= 0.99, metrics
    assert metrics["exact_match_beam3"] >= 0.99, metrics


@pytest.mark.slow
def test_reversal_trains_with_relative_positions():
    # Relative positions learn this task more slowly (cross-attention carries no position): after the
    # same 6 epochs, 95.8% exact match was observed (seed 0), against ~0 for an untrained model.
    metrics = _example().run(position_encoding="relative", verbose=0)
    assert metrics["exact_match_greedy"] >= 0.9, metrics
    assert metrics["final_token_accuracy"] >= 0.98, metrics
