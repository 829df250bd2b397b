"""Multi-worker training with `MultiWorkerMirroredStrategy` and a custom loop (model.fit fails there in Keras 3).

Run two workers on this machine (the script starts itself twice with TF_CONFIG):

    python examples/multi_worker.py --launch 2 --out /tmp/mw/weights.npz
    python examples/multi_worker.py --smoke             # 2 workers, 2 short epochs, checks itself

On a real cluster set TF_CONFIG on each host and run the same command without
--launch. A killed job rerun with the same --checkpoint_dir resumes from its
last finished epoch. The launcher's last line says whether every worker
exited with 0 and the chief wrote its weights; its exit status is 1 if not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ARCH = dict(image_size=8, patch_size=2, num_channels=1, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10)
DIGITS_MEAN, DIGITS_STD = 0.3050, 0.3761  # vit_digits_patch2_8's spec


def digits(count: int):
    """The first `count` scikit-learn digits, normalised like the model expects (NHWC)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = ((data.images[:count] / 16.0 - DIGITS_MEAN) / DIGITS_STD).astype("float32")[..., None]
    return images, data.target[:count].astype("int32")


def build(seed: int = 0, learning_rate: float = 0.05):
    """The tiny ViT and its SGD optimizer; call inside `strategy.scope()`."""
    import keras

    import keras_vit

    keras.utils.set_random_seed(seed)
    return keras_vit.ViT(**ARCH), keras.optimizers.SGD(learning_rate)


def train(args) -> None:
    import keras
    import tensorflow as tf

    from keras_vit.training.multi_worker import DistributedTrainer, save_weights_npz
    from keras_vit.training.strategy import get_strategy, is_chief

    strategy = get_strategy(args.strategy)
    images, labels = digits(args.examples)
    with strategy.scope():
        model, optimizer = build(args.seed, args.lr)
    trainer = DistributedTrainer(
        model,
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        global_batch_size=args.global_batch,
        strategy=strategy,
        checkpoint_dir=args.checkpoint_dir,
    )
    examples = tf.data.Dataset.from_tensor_slices((images, labels))
    # same order on every worker; a per-epoch seed replays exactly after a restart
    history = trainer.fit(
        lambda epoch: examples.shuffle(len(images), seed=args.seed + epoch) if args.shuffle else examples,
        epochs=args.epochs,
    )
    if is_chief(strategy):
        print(
            f"replicas={strategy.num_replicas_in_sync} final loss={history['loss'][-1]:.4f}"
            if history
            else "nothing left to train",
            flush=True,
        )
        if args.out:
            save_weights_npz(model, args.out)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launch", type=int, default=0, help="start this many local workers (0: be a worker)")
    parser.add_argument("--strategy", default="multi_worker")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--global_batch", type=int, default=64)
    parser.add_argument("--examples", type=int, default=1792)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--checkpoint_dir", default=None)
    parser.add_argument("--out", default=None, help="chief writes the final weights here (.npz)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--smoke", action="store_true", help="2 local workers, 2 short epochs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.launch, args.epochs, args.examples, args.shuffle = 2, 2, 256, True
    return args


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if not args.launch:
        train(args)
        return 0
    from keras_vit.training.multi_worker import launch_local_workers

    checkpoint_dir = args.checkpoint_dir or tempfile.mkdtemp(prefix="keras_vit_mw_")
    if args.smoke and not args.out:
        args.out = os.path.join(checkpoint_dir, "weights.npz")
    worker = [
        sys.executable,
        os.path.abspath(__file__),
        "--launch",
        "0",
        "--strategy",
        args.strategy,
        "--epochs",
        str(args.epochs),
        "--global_batch",
        str(args.global_batch),
        "--examples",
        str(args.examples),
        "--seed",
        str(args.seed),
        "--lr",
        str(args.lr),
        "--checkpoint_dir",
        checkpoint_dir,
    ]
    worker += ["--shuffle"] if args.shuffle else []
    worker += ["--out", args.out] if args.out else []
    codes = launch_local_workers(worker, args.launch, timeout=args.timeout, env={"CUDA_VISIBLE_DEVICES": ""})
    print(f"workers exited with {codes}; checkpoints in {checkpoint_dir}")
    # The script's own check: every worker succeeded and the chief wrote the trained weights.
    passed = all(code == 0 for code in codes) and (not args.out or os.path.isfile(args.out))
    wrote = f" and the chief wrote {args.out}" if args.out else ""
    print(f"check: {len(codes)} workers exited with 0{wrote}: {passed}")
    return 0 if passed else (max(codes, key=abs) or 1)


if __name__ == "__main__":
    sys.exit(main())
