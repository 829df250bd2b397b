"""The case lists of a full run and of the seconds-long smoke run.

A case is a JSON-able dict run by `benchmarks.worker` in its own process:
`kind` ("matmul" | "products" | "infer" | "train"), `lib` ("keras_vit" | "keras_hub" |
"timm"), `model` (registry name or architecture dict), `precision`
("float32" | "bfloat16"), `jit` (True | False | "auto" = Keras' default,
which is off on CPU), and the batch sizes, warm-up and repeat counts.
"""

from __future__ import annotations

from benchmarks.worker import PRECISIONS

INFER_MODELS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")
INFER_BATCHES = (1, 8, 32)
CIFAR_MODEL = "vit_cifar_patch4_32"
TI_MODEL = "vit_tiny_patch16_224"
# Training cases (model, batch): the CIFAR recipe model at its recipe's batch (cifar10_vit_scratch: 128),
# ViT-Ti/16 at 224 at batch 8 and at 32 (the 224 recipes train at 512-1024; 32 is what fits the run's time).
TRAIN_CASES = ((CIFAR_MODEL, 128), (TI_MODEL, 8), (TI_MODEL, 32))

# keras_vit's inference and training settings under test (the "library" rows).
# Training: what `jit_compile="auto"` means in keras_vit on a CPU-only machine
# for the two training models, both 192 wide (`keras_vit.training.xla.resolve_jit_compile`,
# which tests/benchmarks checks this table against): no XLA. In float32 XLA only
# pays on models narrower than 128; under mixed bfloat16 XLA:CPU loses oneDNN's
# bf16 matmuls. Predict keeps Keras' default (no XLA on CPU):
# XLA gained 1.2x on ViT-Ti/16 and nothing on ViT-B/16, and recompiles for
# every new batch shape. The `role="study"` cases measure the other setting.
KERAS_VIT_PREDICT_JIT = False
KERAS_VIT_TRAIN_JIT = {"float32": False, "bfloat16": False}

SMOKE_ARCH = dict(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10)


def case_id(case: dict) -> str:
    """A short unique name, e.g. `infer/keras_vit/vit_base_patch16_224/float32/jit=False` (train: `.../b8`)."""
    if case["kind"] == "matmul":
        return f"matmul/{case.get('tag', 'start')}"
    if case["kind"] == "products":
        return f"products/{case['model']}/{case['precision']}/b{case['batch']}"
    if case["kind"] == "recipe":
        seed = case.get("overrides", {}).get("seed")
        return f"recipe/{case['recipe']}/{case['precision']}" + ("" if seed is None else f"/seed={seed}")
    model = case["model"] if isinstance(case["model"], str) else "custom"
    setting = "eager" if case["lib"] == "timm" else f"jit={case.get('jit', 'auto')}"
    batch = [f"b{case['batch']}"] if case["kind"] == "train" else []
    return "/".join([case["kind"], case["lib"], model, case["precision"], setting] + batch)


def _infer(lib: str, model, precision: str, batches=INFER_BATCHES, **extra) -> dict:
    jit = KERAS_VIT_PREDICT_JIT if lib == "keras_vit" else ("auto" if lib == "keras_hub" else None)
    case = dict(kind="infer", lib=lib, model=model, precision=precision, batches=list(batches), jit=jit)
    case.update(extra)
    return case


def _train(lib: str, model, batch: int, precision: str = "float32", **extra) -> dict:
    jit = KERAS_VIT_TRAIN_JIT[precision] if lib == "keras_vit" else "auto"
    case = dict(kind="train", lib=lib, model=model, precision=precision, batch=batch, jit=jit, warmup=2, steps=5)
    if lib == "keras_vit":
        case["init_from"] = "keras_hub"
    case.update(extra)
    return case


def full_cases() -> list[dict]:
    """Every case of the full run, in the order they run (~15 min on 2 lightly loaded cores)."""
    cases: list[dict] = [dict(kind="matmul", size=2048, dtypes=["float32", "bfloat16"], tag="start")]
    # ViT-B/16's forward matrix products alone at batch 8: the ceiling of its matmul-rate fraction.
    cases.append(
        dict(
            kind="products",
            model=INFER_MODELS[-1],
            batch=8,
            precision="float32",
            warmup=1,
            repeats=5,
            min_repeats=3,
            budget_s=5.0,
        )
    )
    for model in INFER_MODELS:
        base = "base" in model
        for precision in PRECISIONS:
            for lib in ("keras_vit", "keras_hub", "timm"):
                # The first call is the warm-up; ViT-B keeps two timed calls per batch size.
                cases.append(
                    _infer(
                        lib,
                        model,
                        precision,
                        warmup=1,
                        repeats=5,
                        min_repeats=2 if base else 3,
                        budget_s=3.0 if base else 5.0,
                    )
                )
    # The XLA study: keras_vit predict with XLA at batch 8 (fp32 and bf16).
    for precision in PRECISIONS:
        cases.append(
            _infer(
                "keras_vit",
                TI_MODEL,
                precision,
                batches=(8,),
                jit=not KERAS_VIT_PREDICT_JIT,
                warmup=2,
                repeats=5,
                min_repeats=3,
                budget_s=5.0,
                role="study",
            )
        )
    # Training against keras-hub under default `fit` (TRAIN_CASES); the XLA study at the first batch of each model.
    first_batch = {model: batch for model, batch in reversed(TRAIN_CASES)}
    for model, batch in TRAIN_CASES:
        cases.append(_train("keras_hub", model, batch, steps=3))
        for precision in PRECISIONS:  # bfloat16 is what recipes use on this CPU ("auto")
            cases.append(_train("keras_vit", model, batch, precision, steps=3))
            if batch == first_batch[model]:
                cases.append(
                    _train(
                        "keras_vit",
                        model,
                        batch,
                        precision,
                        steps=3,
                        jit=not KERAS_VIT_TRAIN_JIT[precision],
                        role="study",
                    )
                )
    cases.append(dict(kind="matmul", size=2048, dtypes=["float32"], tag="end"))
    return cases


def accuracy_cases(recipe: str = "digits_vit", seeds: tuple[int, ...] | None = None, **overrides) -> list[dict]:
    """The default recipe trained whole in float32 and in mixed bfloat16: does bf16 keep the accuracy?

    With `seeds`, each seed runs in both precisions (the test split has 360
    images, so one image is 0.28 points: a single seed cannot resolve 0.5).
    """
    if seeds is None:
        return [dict(kind="recipe", recipe=recipe, precision=p, overrides=overrides) for p in PRECISIONS]
    return [
        dict(kind="recipe", recipe=recipe, precision=p, overrides=dict(overrides, seed=int(seed)))
        for seed in seeds
        for p in PRECISIONS
    ]


def smoke_cases() -> list[dict]:
    """Tiny shapes, one timed call or step each: checks the plumbing in seconds, measures nothing."""
    quick = dict(warmup=1, repeats=1, min_repeats=1, budget_s=0.0)
    return [
        dict(kind="matmul", size=64, dtypes=["float32"], tag="start", **quick),
        _infer("keras_vit", SMOKE_ARCH, "float32", batches=(1, 2), **quick),
        _infer("keras_hub", SMOKE_ARCH, "float32", batches=(2,), **quick),
        _infer("timm", SMOKE_ARCH, "float32", batches=(2,), **quick),
        _train("keras_hub", SMOKE_ARCH, 2, warmup=1, steps=1),
        _train("keras_vit", SMOKE_ARCH, 2, warmup=1, steps=1),
    ]
