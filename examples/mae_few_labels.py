"""Does MAE pretraining on unlabeled images help when labels are few? Measured offline on two real image sets.

    python examples/mae_few_labels.py --out docs/images --results benchmarks/results/mae_few_labels  # the docs' table
    python examples/mae_few_labels.py --smoke --out /tmp/mae                                       # minutes, for CI

Both image sets ship inside installed packages (nothing is downloaded):
* digits: scikit-learn's 8x8 handwritten digits, 10 classes, 1,437 training and 360 test images;
* faces: scikit-image's subset of Labeled Faces in the Wild, 25x25 crops (cut to 24x24) of faces and of
  background, 2 classes, 100 training and 100 test images (`pip install scikit-image`).

For each set and seed, the same small ViT (`vit_digits_patch2_8`: 64 wide, 4 blocks, 16 patches; patch 6 at 24x24
for the faces) is
1. pretrained as a masked autoencoder (75% of patches masked) on every training image, labels unused;
2. fine-tuned as a classifier (average pooling + fc_norm, as the paper fine-tunes) with 5 and 20 labelled images
   per class, and compared with
3. the same classifier trained from scratch on the same labelled images, same optimiser and epochs, and
4. (faces only) the classifier pretrained with labels on all 1,437 digits (upsampled 3x to 24x24), then
   fine-tuned the same way: supervised pretraining on another labelled set, the usual alternative to MAE.

The seed picks the labelled images, the initialisation and the masks. The script prints every run, then the
mean ± standard deviation over seeds and the seconds each run took; `--results` also writes them (with the CPU
and load average) as JSON and as a Markdown table. Its last line says where MAE beat the other starts.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_vit
from keras_vit import visualize
from keras_vit.data.digits import digits_arrays
from keras_vit.data.lfw_faces import lfw_faces_arrays
from keras_vit.training.finetune import transfer_weights
from keras_vit.training.io import atomic_path, write_json
from keras_vit.training.optimizers import build_optimizer
from keras_vit.training.schedules import WarmupCosine

MAE_NAME, VIT_NAME = "mae_vit_digits_patch2_8", "vit_digits_patch2_8"
FACES_ARCH = dict(image_size=24, patch_size=6)  # the digits model's 4x4 grid of patches, at 24x24
BUDGETS = (5, 20)


def standardised(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((images - mean) / std).astype("float32")


def load_sets() -> dict[str, dict]:
    """Each set's normalised train/test arrays, classifier arguments and class count."""
    spec = keras_vit.model_spec(VIT_NAME)
    digits = {split: digits_arrays(split) for split in ("train", "test")}
    faces = {split: lfw_faces_arrays(split) for split in ("train", "test")}
    faces_mean, faces_std = faces["train"][0].mean(), faces["train"][0].std()  # statistics of unlabeled pixels
    sets = {
        "digits": dict(arch={}, classes=10, mean=spec.mean[0], std=spec.std[0], scale=16.0, data=digits),
        "faces": dict(arch=FACES_ARCH, classes=2, mean=faces_mean, std=faces_std, scale=1.0, data=faces),
    }
    for info in sets.values():
        for split, (x, y) in info["data"].items():
            x = x[:, :24, :24] / info["scale"]  # faces: 25x25 cut to 24x24; digits unchanged
            info[split] = (standardised(x, info["mean"], info["std"]), y)
    return sets


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(classes)])


def optimizer(model, lr: float, steps: int, warmup: int, layer_decay=None):
    schedule = WarmupCosine(lr, total_steps=steps, warmup_steps=warmup)
    return build_optimizer("adamw", schedule, model=model, weight_decay=0.05, layer_decay=layer_decay)


def pretrain_mae(images: np.ndarray, arch: dict, epochs: int, seed: int) -> tuple[keras_vit.MAE, float]:
    """MAE on `images` (no labels); a set under 1,024 images is repeated so every epoch takes >= 8 steps of 128."""
    keras.utils.set_random_seed(seed)
    mae = keras_vit.create_model(MAE_NAME, seed=seed, **arch)
    images = np.concatenate([images] * -(-1024 // len(images)))  # each repeat gets fresh masks
    batch = 128
    steps = epochs * (len(images) // batch)
    # lr 1e-3: the paper's 1.5e-4 x batch/256 is set for ViT-B at batch 4096; this 64-wide model takes more
    mae.compile(optimizer=optimizer(mae, 1e-3, steps, steps // 10), jit_compile=False)
    start = time.perf_counter()
    mae.fit(images, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return mae, time.perf_counter() - start


def train_classifier(
    x, y, classes: int, arch: dict, epochs: int, seed: int, init=None, batch: int = 32
) -> tuple[keras.Model, float]:
    """Trains the gap + fc_norm classifier (from `init`'s matching layers when given); returns it and its seconds."""
    keras.utils.set_random_seed(seed)
    model = keras_vit.ViT(VIT_NAME, pooling="gap", drop_path_rate=0.1, num_classes=classes, **arch)
    if init is not None:
        transfer_weights(init, model)
    batch = min(batch, len(x))
    steps = epochs * max(1, len(x) // batch)
    model.compile(
        optimizer=optimizer(model, 1e-3, steps, steps // 10, layer_decay=0.75 if init is not None else None),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        jit_compile=False,
    )
    start = time.perf_counter()
    model.fit(x, np.eye(classes, dtype="float32")[y], batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return model, time.perf_counter() - start


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=-1) == y))


def upsampled_digits(sets: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits at the faces' 24x24 (each pixel repeated 3x3), for supervised pretraining of the faces model."""
    return {
        split: (sets["digits"][split][0].repeat(3, axis=1).repeat(3, axis=2), sets["digits"][split][1])
        for split in ("train", "test")
    }


def run_seed(
    sets: dict, names: list[str], budgets: tuple[int, ...], seed: int, epochs: dict, log: list, maes: dict
) -> list[dict]:
    """Every run of one seed on every set; pretraining times go to `log`, each set's MAE to `maes`."""
    runs = []
    for name in names:
        info = sets[name]
        (train_x, train_y), (test_x, test_y) = info["train"], info["test"]
        starts = {}
        starts["mae"], seconds = pretrain_mae(train_x, info["arch"], epochs["mae"], seed)
        log.append(dict(seed=seed, dataset=name, stage="mae_pretrain", seconds=seconds))
        maes[name] = starts["mae"]
        print(f"{name} seed {seed}: MAE pretraining on {len(train_x)} unlabeled images: {seconds:.1f}s")
        if name == "faces":
            digits = upsampled_digits(sets)
            starts["supervised"], seconds = train_classifier(
                *digits["train"], 10, FACES_ARCH, epochs["supervised"], seed, batch=128
            )
            digits_accuracy = accuracy(starts["supervised"], *digits["test"])
            entry = dict(seed=seed, dataset=name, stage="supervised_pretrain", seconds=seconds)
            log.append(dict(entry, digits_test_accuracy=digits_accuracy))
            print(
                f"{name} seed {seed}: supervised pretraining on 1,437 labelled digits: {seconds:.1f}s, "
                f"digits test accuracy {digits_accuracy:.4f}"
            )
        starts["scratch"] = None
        for per_class in budgets:
            index = labelled_subset(train_y, per_class, seed)
            for start, init in starts.items():
                model, seconds = train_classifier(
                    train_x[index], train_y[index], info["classes"], info["arch"], epochs["finetune"], seed, init
                )
                result = accuracy(model, test_x, test_y)
                runs.append(
                    dict(dataset=name, seed=seed, per_class=per_class, start=start, accuracy=result, seconds=seconds)
                )
                print(f"  {name} {per_class:>2} labels/class, {start:<10}: test accuracy {result:.4f} ({seconds:.1f}s)")
    return runs


def summary_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r["dataset"] for r in runs):
        for per_class in dict.fromkeys(r["per_class"] for r in runs):
            for start in dict.fromkeys(r["start"] for r in runs if r["dataset"] == name):
                group = [r for r in runs if (r["dataset"], r["per_class"], r["start"]) == (name, per_class, start)]
                acc = np.array([r["accuracy"] for r in group])
                rows.append(
                    dict(
                        dataset=name,
                        per_class=per_class,
                        start=start,
                        mean=float(acc.mean()),
                        std=float(acc.std()),
                        seeds=len(acc),
                        seconds=float(np.mean([r["seconds"] for r in group])),
                    )
                )
    return rows


def markdown(rows: list[dict], log: list[dict], host: dict) -> str:
    lines = [
        "| data set | labels per class | start | test accuracy (mean ± std) | seeds | seconds per run |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['per_class']} | {r['start']} | {r['mean']:.3f} ± {r['std']:.3f} | "
            f"{r['seeds']} | {r['seconds']:.1f} |"
        )
    for name, stage in dict.fromkeys((entry["dataset"], entry["stage"]) for entry in log):
        seconds = [entry["seconds"] for entry in log if (entry["dataset"], entry["stage"]) == (name, stage)]
        lines.append(f"\n{name} {stage.replace('_', ' ')}: {np.mean(seconds):.1f}s per seed")
    lines.append(
        f"\nHost: {host['cpu']}, {host['cpus']} CPUs visible; load average {host['load_before']} before, "
        f"{host['load_after']} after; {host['minutes']:.1f} min wall-clock in all."
    )
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            return next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one seed, few epochs: minutes, for CI")
    parser.add_argument("--out", default="docs/images", help="folder of the reconstruction pictures")
    parser.add_argument("--results", default=None, help="also write the results to RESULTS.json and RESULTS.md")
    parser.add_argument("--datasets", default="digits,faces", help="comma-separated: digits, faces")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--pretrain_epochs", type=int, default=100, help="MAE epochs (>= 8 steps of 128 each)")
    parser.add_argument("--supervised_epochs", type=int, default=30, help="faces: supervised epochs over the digits")
    parser.add_argument("--finetune_epochs", type=int, default=100, help="classifier epochs over the labelled images")
    args = parser.parse_args()
    seeds = range(1 if args.smoke else args.seeds)
    budgets = BUDGETS[:1] if args.smoke else BUDGETS
    epochs = dict(mae=args.pretrain_epochs, supervised=args.supervised_epochs, finetune=args.finetune_epochs)
    if args.smoke:
        epochs = dict(mae=1, supervised=1, finetune=2)

    host = dict(cpu=cpu_model(), cpus=os.cpu_count(), load_before=[round(x, 1) for x in os.getloadavg()])
    begin = time.perf_counter()
    sets = load_sets()
    names = args.datasets.split(",")
    if not set(names) <= set(sets):
        parser.error(f"--datasets takes {', '.join(sets)}. Received: --datasets={args.datasets}")
    runs, log, maes = [], [], {}
    for seed in seeds:
        runs += run_seed(sets, names, budgets, seed, epochs, log, maes)
    host.update(load_after=[round(x, 1) for x in os.getloadavg()], minutes=(time.perf_counter() - begin) / 60)

    for name, mae in maes.items():
        path = os.path.join(args.out, f"mae_{name}_reconstruction.png")
        visualize.plot_mae_reconstruction(mae, sets[name]["test"][0][:6], path, noise=None)
        print(f"wrote {path} (test images the MAE never saw)")
    rows = summary_rows(runs)
    table = markdown(rows, log, host)
    print("\n" + table)
    if args.results:
        settings = dict(epochs=epochs, seeds=list(seeds), budgets=budgets, smoke=args.smoke)
        write_json(args.results + ".json", dict(host=host, settings=settings, summary=rows, runs=runs, pretraining=log))
        with atomic_path(args.results + ".md") as tmp, open(tmp, "w") as file:
            file.write(table)
        print(f"wrote {args.results}.json and {args.results}.md")
    means = {(r["dataset"], r["per_class"], r["start"]): r["mean"] for r in rows}
    verdicts = [
        f"{name} {per_class}/class vs {other} {means[name, per_class, 'mae'] > means[name, per_class, other]}"
        for name, per_class, other in means
        if other != "mae"
    ]
    # a full run must learn (above chance); the smoke run's few epochs only have to run end to end
    chance = {name: 1 / info["classes"] for name, info in sets.items()}
    ok = all(np.isfinite(r["accuracy"]) and (args.smoke or r["accuracy"] > chance[r["dataset"]]) for r in runs)
    print(f"check: MAE beats {', '.join(verdicts)}; every run finished {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
