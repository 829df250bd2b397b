"""Turns the harness' JSON results into markdown tables and the issue's target checks."""

from __future__ import annotations

import statistics
from typing import Any

# The targets of the benchmark issue, as (name, ratio needed).
TARGET_VS_HUB_INFER = 1.05
TARGET_VS_TIMM_INFER = 1.8
TARGET_MATMUL_FRACTION = 0.95
TARGET_VS_HUB_TRAIN = 1.8


def matmul_rate(results: list[dict], dtype: str = "float32") -> float | None:
    """Mean GFLOP/s of the matmul cases (start and end of the run) in `dtype`."""
    rates = [r["result"]["rates"][dtype]["gflops"] for r in results
             if r["case"]["kind"] == "matmul" and r.get("ok") and dtype in r["result"]["rates"]]
    return statistics.mean(rates) if rates else None


def _ok(results: list[dict], kind: str) -> list[dict]:
    return [r for r in results if r["case"]["kind"] == kind and r.get("ok")]


def _model_name(case: dict) -> str:
    return case["model"] if isinstance(case["model"], str) else "tiny (smoke)"


def _jit_label(case: dict) -> str:
    jit = case.get("jit")
    if case["lib"] == "timm":
        return "eager"
    return {True: "XLA", False: "no XLA", "auto": "default (no XLA)"}[jit]


def _batch_row(result: dict, batch: int) -> dict | None:
    return next((row for row in result.get("batches", []) if row["batch"] == batch), None)


def infer_rate(results: list[dict], lib: str, model: str, precision: str, batch: int,
               jit: Any = "library") -> float | None:
    """Images/s of one inference case at `batch`; `jit="library"` picks the library-default row."""
    for r in _ok(results, "infer"):
        case = r["case"]
        if (case["lib"], _model_name(case), case["precision"]) != (lib, model, precision):
            continue
        if jit == "library" and case.get("role") == "study":
            continue  # the other XLA setting, not the library's
        if jit != "library" and case.get("jit") != jit:
            continue
        row = _batch_row(r["result"], batch)
        if row:
            return row["images_per_s"]
    return None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def inference_table(results: list[dict]) -> list[str]:
    """One row per inference case: latency, throughput, achieved GFLOP/s and its share of the matmul rate."""
    peak = matmul_rate(results)
    lines = [
        "| model | precision | library | XLA | b=1 latency ms | b=8 img/s | b=32 img/s | b=8 GFLOP/s | "
        "b=8 / matmul | peak RSS MiB | load 1m |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in _ok(results, "infer"):
        case, result = r["case"], r["result"]
        one, eight, many = (_batch_row(result, b) for b in (1, 8, 32))
        gflops = eight["images_per_s"] * result["flops_per_image"] / 1e9 if eight else None
        lines.append(
            f"| {_model_name(case)} | {case['precision']} | {case['lib']} | {_jit_label(case)} | "
            f"{_fmt(one and one['median_s'] * 1e3)} | {_fmt(eight and eight['images_per_s'], 2)} | "
            f"{_fmt(many and many['images_per_s'], 2)} | {_fmt(gflops)} | {_fmt(_ratio(gflops, peak), 2)} | "
            f"{r['peak_rss_mib']:.0f} | {r['load_before'][0]:.1f} |"
        )
    return lines


def ratio_table(results: list[dict]) -> list[str]:
    """keras_vit / keras-hub and keras_vit / timm throughput at batches 8 and 32 (library settings)."""
    lines = ["| model | precision | batch | keras_vit / keras-hub | keras_vit / timm | keras-hub / timm |",
             "|---|---|---:|---:|---:|---:|"]
    keys = sorted({(_model_name(r["case"]), r["case"]["precision"]) for r in _ok(results, "infer")})
    for model, precision in keys:
        for batch in (8, 32):
            ours, hub, timm = (infer_rate(results, lib, model, precision, batch)
                               for lib in ("keras_vit", "keras_hub", "timm"))
            if ours is None and hub is None:
                continue
            lines.append(f"| {model} | {precision} | {batch} | {_fmt(_ratio(ours, hub), 2)} | "
                         f"{_fmt(_ratio(ours, timm), 2)} | {_fmt(_ratio(hub, timm), 2)} |")
    return lines


def training_table(results: list[dict]) -> list[str]:
    """Training throughput over full AdamW steps, with the loss gap to keras-hub's run."""
    peak = matmul_rate(results)
    lines = ["| model | library | precision | XLA | batch | img/s | GFLOP/s | / matmul | vs keras-hub | "
             "max abs loss gap | peak RSS MiB | load 1m |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in _ok(results, "train"):
        case, result = r["case"], r["result"]
        hub = _hub_training(results, case)
        gflops = result["images_per_s"] * result["flops_per_image"] / 1e9
        gap = None
        if hub and case["lib"] != "keras_hub":
            pairs = zip(result["losses"], hub["result"]["losses"])
            gap = max(abs(a - b) for a, b in pairs)
        vs_hub = _ratio(result["images_per_s"], hub["result"]["images_per_s"]) if hub else None
        lines.append(
            f"| {_model_name(case)} | {case['lib']} | {case['precision']} | {_jit_label(case)} | "
            f"{result['batch']} | {result['images_per_s']:.2f} | {gflops:.1f} | {_fmt(_ratio(gflops, peak), 2)} | "
            f"{_fmt(vs_hub, 2)} | {_fmt(gap, 4)} | {r['peak_rss_mib']:.0f} | {r['load_before'][0]:.1f} |"
        )
    return lines


def _hub_training(results: list[dict], case: dict) -> dict | None:
    return next((r for r in _ok(results, "train") if r["case"]["lib"] == "keras_hub"
                 and _model_name(r["case"]) == _model_name(case)
                 and r["case"]["precision"] == "float32" and r["case"]["batch"] == case["batch"]), None)


def training_rate(results: list[dict], lib: str, model: str, precision: str, jit: Any) -> float | None:
    for r in _ok(results, "train"):
        case = r["case"]
        if (case["lib"], _model_name(case), case["precision"], case.get("jit")) == (lib, model, precision, jit):
            return r["result"]["images_per_s"]
    return None


def target_checks(results: list[dict], train_jit: Any = True) -> list[dict]:
    """The issue's targets with the measured ratio and whether it was met."""
    checks = []
    base = "vit_base_patch16_224"
    ours, hub, timm = (infer_rate(results, lib, base, "float32", 8) for lib in ("keras_vit", "keras_hub", "timm"))
    peak = matmul_rate(results)
    arch_flops = next((r["result"]["flops_per_image"] for r in _ok(results, "infer")
                       if _model_name(r["case"]) == base), None)
    checks.append(dict(target=f"ViT-B/16 b8 fp32 >= {TARGET_VS_HUB_INFER}x keras-hub", needed=TARGET_VS_HUB_INFER,
                       measured=_ratio(ours, hub)))
    checks.append(dict(target=f"ViT-B/16 b8 fp32 >= {TARGET_VS_TIMM_INFER}x timm", needed=TARGET_VS_TIMM_INFER,
                       measured=_ratio(ours, timm)))
    fraction = _ratio(ours * arch_flops / 1e9, peak) if ours and arch_flops else None
    checks.append(dict(target=f"ViT-B/16 b8 fp32 >= {TARGET_MATMUL_FRACTION} of the matmul rate",
                       needed=TARGET_MATMUL_FRACTION, measured=fraction))
    for model in ("vit_cifar_patch4_32", "vit_tiny_patch16_224"):
        ours_t = training_rate(results, "keras_vit", model, "float32", train_jit)
        hub_t = training_rate(results, "keras_hub", model, "float32", "auto")
        checks.append(dict(target=f"training {model} fp32 >= {TARGET_VS_HUB_TRAIN}x keras-hub default fit",
                           needed=TARGET_VS_HUB_TRAIN, measured=_ratio(ours_t, hub_t)))
    for check in checks:
        check["met"] = None if check["measured"] is None else check["measured"] >= check["needed"]
    return checks


def markdown(run: dict) -> str:
    """The whole report: machine, matmul rate, inference, ratios, training and the targets."""
    info, results = run["machine"], run["results"]
    loads = [r["load_before"][0] for r in results] + [r["load_after"][0] for r in results]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"Measured {info['date']} on {info['cpu']} ({info['logical_cores']} logical cores, "
        f"AVX512_BF16: {'yes' if info['avx512_bf16'] else 'no'}); {versions}.",
        f"Run mode: {run['mode']}; 1-minute load average during the run {min(loads):.1f}-{max(loads):.1f} "
        f"(the cores were shared when it is above ~0.5; compare ratios within the run).",
        "",
    ]
    for r in _ok(results, "matmul"):
        size, rate_map = r["result"].get("size", 2048), r["result"]["rates"]
        lines.append(f"TensorFlow {size}x{size} matmul ({r['case'].get('tag', '')} of the run): " + ", ".join(
            f"{dtype} {rate['gflops']:.1f} GFLOP/s" for dtype, rate in rate_map.items()) + ".")
    lines += ["", "**Inference** (median over repeats after warm-up; FLOPs counted analytically, 2 x MACs of the "
              "matrix products):", ""] + inference_table(results)
    lines += ["", "**Inference ratios** (library settings):", ""] + ratio_table(results)
    lines += ["", "**Training** (`model.fit`, AdamW, sparse cross-entropy, one fixed synthetic batch; keras_vit "
              "starts from the keras-hub model's weights so the loss curves are comparable; FLOPs = 3 x forward):",
              ""] + training_table(results)
    checks = target_checks(results)
    lines += ["", "**Targets of the issue**:", "", "| target | measured | met |", "|---|---:|---|"]
    for check in checks:
        met = "n/a" if check["met"] is None else ("yes" if check["met"] else "**no**")
        lines.append(f"| {check['target']} | {_fmt(check['measured'], 2)} | {met} |")
    failed = [r for r in results if not r.get("ok")]
    if failed:
        lines += ["", "Failed cases: " + "; ".join(f"`{r['id']}`: {r.get('error', '')[:200]}" for r in failed)]
    return "\n".join(lines) + "\n"
