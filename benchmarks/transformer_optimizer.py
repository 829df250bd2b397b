"""The sequence Transformer's train step with Keras' Adam against `transformer_optimizer` (a `FusedAdam`).

    python -m benchmarks.transformer_optimizer --width 256 --batch 32 --rounds 12

Both models are built from the same seed and timed in one process, interleaved
as in `benchmarks.paired`; the report is the per-round speed of the fused
update relative to Keras' own, median and quartiles. Keras' `Adam` is built from
`transformer_optimizer`'s config (beta2 0.98, epsilon 1e-9, the inverse-square-root
schedule, clipnorm 1), so both sides share every hyper-parameter.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks import paired

VOCAB_SIZE = 1000


def build_steps(width: int, batch: int, tokens: int = 32, layers: int = 2) -> list:
    """Two zero-argument train-step callables: Keras' `Adam` first, then `transformer_optimizer`'s."""
    import keras

    import keras_vit
    from keras_vit.training.sequence import LabelSmoothedSequenceLoss, transformer_optimizer

    rng = np.random.default_rng(0)
    inputs = {
        name: rng.integers(3, VOCAB_SIZE, (batch, tokens)).astype("int32")
        for name in ("encoder_tokens", "decoder_tokens")
    }
    labels = rng.integers(3, VOCAB_SIZE, (batch, tokens)).astype("int32")
    fused = transformer_optimizer(width, warmup_steps=100, clipnorm=1.0)
    optimizers = [keras.optimizers.Adam.from_config(fused.get_config()), fused]  # same settings, Keras' update
    steps = []
    for optimizer in optimizers:
        keras.utils.set_random_seed(0)
        model = keras_vit.Transformer(
            vocab_size=VOCAB_SIZE,
            share_embeddings=True,
            tie_output=True,
            hidden_dim=width,
            num_encoder_layers=layers,
            num_decoder_layers=layers,
            num_heads=4,
            mlp_dim=2 * width,
            dropout_rate=0.0,
            max_length=tokens + 1,
            pad_token_id=0,
            start_token_id=1,
            end_token_id=2,
        )
        model.compile(optimizer=optimizer, loss=LabelSmoothedSequenceLoss(0.1, pad_token_id=0))
        steps.append(lambda model=model: model.train_on_batch(inputs, labels))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256, help="model width (4 heads, MLP 2x wide)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=10, help="train steps per side per round")
    args = parser.parse_args(argv)
    if min(args.width, args.batch, args.rounds, args.calls) < 1 or args.width % 4:
        parser.error("--batch, --rounds and --calls must be >= 1, --width a positive multiple of 4")
    seconds = paired.interleave(build_steps(args.width, args.batch), args.rounds, args.calls)
    speedup = seconds[:, 0] / seconds[:, 1]
    q1, median, q3 = np.percentile(speedup, [25, 50, 75])
    print(
        f"width {args.width}, batch {args.batch}: Keras Adam {1e3 * np.median(seconds[:, 0]):.1f} ms/step, "
        f"FusedAdam {1e3 * np.median(seconds[:, 1]):.1f} ms/step; FusedAdam {median:.3f}x "
        f"(quartiles {q1:.3f}-{q3:.3f}), faster in {int(np.sum(speedup > 1))}/{len(speedup)} rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
