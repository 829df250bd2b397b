"""Greedy and beam search over any autoregressive step function, as `while_loop`s with static shapes.

A step function maps `(tokens, index, state) -> (logits, state)`: `tokens` is
the `(rows, max_length + 1)` buffer of the start token and the tokens chosen so
far (padding after them), `index` the position whose next token is wanted (a
scalar int tensor), and `state` any nested structure of tensors with `rows`
leading (a key/value cache). Beam search reorders `state` rows when beams are
re-ranked. Written with `keras.ops` so the loops compile in `tf.function` and
export to SavedModel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_vit.validation import check_int

StepFn = Callable[[Any, Any, Any], tuple[Any, Any]]
NEG_INF = float("-inf")


def _initial_tokens(rows, max_length: int, start_token_id: int, pad_token_id: int):
    start = ops.full((rows, 1), start_token_id, dtype="int32")
    return ops.concatenate([start, ops.full((rows, max_length), pad_token_id, dtype="int32")], axis=1)


def length_penalty_factor(length, alpha: float):
    """GNMT length normalisation `((5 + length) / 6) ** alpha` (Wu et al. 2016, eq. 14)."""
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


def greedy_search(
    step_fn: StepFn,
    state: Any,
    batch_size,
    max_length: int,
    start_token_id: int,
    end_token_id: int | None,
    pad_token_id: int = 0,
) -> tuple[Any, Any]:
    """Picks the most likely token at each step until every row has produced `end_token_id`.

    Args:
        step_fn: `(tokens, index, state) -> (logits (rows, vocab), state)`.
        state: initial state (e.g. empty key/value caches), `batch_size` rows.
        batch_size: int or scalar tensor. Rows to decode.
        max_length: int. Most tokens to generate.
        start_token_id: int. First decoder input.
        end_token_id: int or None. Finishes a row; None decodes `max_length` tokens.
        pad_token_id: int. Fills rows after they finish. Defaults to `0`.

    Returns:
        `(tokens int32 (batch, max_length), scores float32 (batch,))`, scores being
        the summed log-probabilities of the chosen tokens (end token included).
    """
    check_int(max_length, "max_length", 1)
    tokens = _initial_tokens(batch_size, max_length, start_token_id, pad_token_id)
    scores = ops.zeros((batch_size,), dtype="float32")
    finished = ops.zeros((batch_size,), dtype="bool")

    def cond(index, tokens, scores, finished, state):
        return ops.logical_and(index < max_length, ops.logical_not(ops.all(finished)))

    def body(index, tokens, scores, finished, state):
        logits, state = step_fn(tokens, index, state)
        log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        chosen = ops.cast(ops.argmax(log_probs, axis=-1), "int32")
        chosen = ops.where(finished, pad_token_id, chosen)
        gained = ops.take_along_axis(log_probs, chosen[:, None], axis=1)[:, 0]
        scores = scores + ops.where(finished, 0.0, gained)
        tokens = ops.slice_update(tokens, (0, index + 1), chosen[:, None])
        if end_token_id is not None:
            finished = ops.logical_or(finished, ops.equal(chosen, end_token_id))
        return index + 1, tokens, scores, finished, state

    index = ops.convert_to_tensor(0, dtype="int32")
    _, tokens, scores, _, _ = ops.while_loop(cond, body, (index, tokens, scores, finished, state))
    return tokens[:, 1:], scores


def _gather_beams(values, indices):
    """`values[b, indices[b, j]]` for `values` (batch, beams, ...) and `indices` (batch, k)."""
    extra = len(values.shape) - 2
    index = ops.reshape(indices, tuple(ops.shape(indices)) + (1,) * extra)
    return ops.take_along_axis(
        values, ops.broadcast_to(index, tuple(ops.shape(indices)) + tuple(ops.shape(values)[2:])), axis=1
    )


def beam_search(
    step_fn: StepFn,
    state: Any,
    batch_size,
    beam_size: int,
    max_length: int,
    start_token_id: int,
    end_token_id: int | None,
    pad_token_id: int = 0,
    length_penalty: float = 0.6,
) -> tuple[Any, Any]:
    """Keeps the `beam_size` most likely prefixes and the `beam_size` best finished sequences.

    Each step extends every alive prefix by every token and keeps the top
    `2 * beam_size` candidates (so `beam_size` of them can stay alive even if
    the rest end). Candidates ending with `end_token_id` compete for the
    finished set by length-normalised score `log P / lp(length)`; the others
    stay alive ranked by `log P`. The search stops when no alive prefix can
    beat the worst finished sequence (`log P / lp(max_length)` bounds it when
    `length_penalty >= 0`) or at `max_length`, where prefixes still alive join
    the finished pool with `lp(max_length)`.

    Args:
        step_fn: `(tokens, index, state) -> (logits (rows, vocab), state)`, `rows = batch * beam_size`
            ordered batch-major (row `b * beam_size + k` is beam `k` of item `b`).
        state: initial state with `batch_size` rows; repeated `beam_size` times here.
        batch_size: int or scalar tensor.
        beam_size: int. Beams per item.
        max_length: int. Most tokens to generate.
        start_token_id: int. First decoder input.
        end_token_id: int or None. Ends a sequence.
        pad_token_id: int. Fills sequences after their end. Defaults to `0`.
        length_penalty: float >= 0. The GNMT alpha; 0 ranks by `log P`. Defaults to 0.6.

    Returns:
        `(tokens int32 (batch, beam_size, max_length), scores float32 (batch, beam_size))`,
        best first.
    """
    check_int(beam_size, "beam_size", 1)
    check_int(max_length, "max_length", 1)
    if not isinstance(length_penalty, (int, float)) or length_penalty < 0:
        raise ValueError(f"`length_penalty` must be a float >= 0. Received: length_penalty={length_penalty!r}")
    k = beam_size
    rows = batch_size * k
    state = keras.tree.map_structure(lambda x: ops.repeat(x, k, axis=0), state)
    alive_tokens = ops.reshape(
        _initial_tokens(rows, max_length, start_token_id, pad_token_id), (batch_size, k, max_length + 1)
    )
    # Only the first beam is live at the start, so the first step does not pick duplicates.
    first = ops.concatenate([ops.zeros((1,)), ops.full((k - 1,), NEG_INF)], axis=0)
    alive_log_probs = ops.tile(first[None], (batch_size, 1))
    finished_tokens = ops.full((batch_size, k, max_length + 1), pad_token_id, dtype="int32")
    finished_scores = ops.full((batch_size, k), NEG_INF)
    batch_offsets = ops.arange(batch_size)[:, None] * k
    worst_normaliser = length_penalty_factor(max_length, length_penalty)

    def cond(index, alive_tokens, alive_log_probs, finished_tokens, finished_scores, state):
        best_possible = alive_log_probs[:, 0] / worst_normaliser
        can_improve = ops.any(best_possible > finished_scores[:, -1])
        return ops.logical_and(index < max_length, can_improve)

    def body(index, alive_tokens, alive_log_probs, finished_tokens, finished_scores, state):
        logits, state = step_fn(ops.reshape(alive_tokens, (rows, max_length + 1)), index, state)
        log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        vocab = ops.shape(log_probs)[-1]
        candidates = alive_log_probs[:, :, None] + ops.reshape(log_probs, (batch_size, k, vocab))
        top_log_probs, top_ids = ops.top_k(ops.reshape(candidates, (batch_size, k * vocab)), 2 * k)
        parents, new_tokens = top_ids // vocab, ops.cast(top_ids % vocab, "int32")
        candidate_tokens = ops.slice_update(
            _gather_beams(alive_tokens, parents), (0, 0, index + 1), new_tokens[:, :, None]
        )
        if end_token_id is None:
            ended = ops.zeros_like(new_tokens, dtype="bool")
        else:
            ended = ops.equal(new_tokens, end_token_id)

        # Alive: the best non-ended candidates, by log-probability.
        alive_log_probs, keep = ops.top_k(ops.where(ended, NEG_INF, top_log_probs), k)
        alive_tokens = _gather_beams(candidate_tokens, keep)
        rows_kept = ops.reshape(batch_offsets + ops.take_along_axis(parents, keep, axis=1), (-1,))
        state = keras.tree.map_structure(lambda x: ops.take(x, rows_kept, axis=0), state)

        # Finished: merge the ended candidates into the best-k, by normalised score.
        normalised = top_log_probs / length_penalty_factor(index + 1, length_penalty)
        pool_scores = ops.concatenate([finished_scores, ops.where(ended, normalised, NEG_INF)], axis=1)
        pool_tokens = ops.concatenate([finished_tokens, candidate_tokens], axis=1)
        finished_scores, best = ops.top_k(pool_scores, k)
        finished_tokens = _gather_beams(pool_tokens, best)
        return index + 1, alive_tokens, alive_log_probs, finished_tokens, finished_scores, state

    index = ops.convert_to_tensor(0, dtype="int32")
    loop_vars = (index, alive_tokens, alive_log_probs, finished_tokens, finished_scores, state)
    index, alive_tokens, alive_log_probs, finished_tokens, finished_scores, _ = ops.while_loop(cond, body, loop_vars)
    # Prefixes still alive at max_length count as finished there (they are worse than every
    # finished sequence when the loop stopped early, so this only matters at max_length).
    alive_scores = alive_log_probs / worst_normaliser
    pool_scores = ops.concatenate([finished_scores, alive_scores], axis=1)
    pool_tokens = ops.concatenate([finished_tokens, alive_tokens], axis=1)
    scores, best = ops.top_k(pool_scores, k)
    return _gather_beams(pool_tokens, best)[:, :, 1:], scores
