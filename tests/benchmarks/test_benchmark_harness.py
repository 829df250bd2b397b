"""The benchmark harness: FLOP formula, peers built with the same dims, worker cases and the report.

Runs the tiny smoke cases in this process (TensorFlow and torch are already
imported in the right order by conftest) so the suite takes seconds; the
subprocess plumbing is checked with a case that fails before TensorFlow loads
and, in the slow suite, with a real `--smoke` run.
"""

import collections
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import (
    cases,
    flops,
    lean_forward,
    machine,
    op_profile,
    paired,
    peers,
    report,
    run,
    transformer_optimizer,
    worker,
)

TINY = dict(cases.SMOKE_ARCH)
QUICK = dict(warmup=1, repeats=1, min_repeats=1, budget_s=0.0)


def test_forward_macs_match_published_timm_counts():
    # timm's model cards: ViT-Ti/16 1.3, ViT-S/16 4.6, ViT-B/16 17.6 GMACs at 224.
    for name, gmacs in (("vit_tiny_patch16_224", 1.3), ("vit_small_patch16_224", 4.6), ("vit_base_patch16_224", 17.6)):
        assert flops.vit_forward_macs(peers.resolve_arch(name)) / 1e9 == pytest.approx(gmacs, abs=0.05)


def test_forward_flops_match_torch_flop_counter():
    arch = peers.resolve_arch(dict(TINY, depth=2))
    model = peers.build_timm(arch)
    for block in model.blocks:  # explicit matmuls: the counter misses the CPU fused-attention kernel
        block.attn.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert flops.vit_forward_flops(arch) == counter.get_total_flops()
    assert flops.vit_train_flops(arch) == 3 * counter.get_total_flops()


def test_forward_macs_rejects_bad_arch():
    with pytest.raises(ValueError, match="hidden_dim"):
        flops.vit_forward_macs(dict(TINY, hidden_dim=0))
    with pytest.raises(ValueError, match="height, width"):
        flops.vit_forward_macs(dict(TINY, image_size=(32, 32, 3)))


def test_keras_hub_model_matches_keras_vit_after_weight_copy(rng):
    arch = peers.resolve_arch(dict(TINY, depth=2))
    hub, ours = peers.build_keras_hub(arch), peers.build_keras_vit(arch)
    assert hub.count_params() == ours.count_params()
    peers.copy_keras_hub_to_keras_vit(hub, ours)
    images = rng.standard_normal((3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(images)), np.asarray(hub(images)), atol=2e-5)


def test_timm_model_has_the_same_parameter_count():
    arch = peers.resolve_arch("vit_tiny_patch16_224")
    timm_params = sum(p.numel() for p in peers.build_timm(arch).parameters())
    assert timm_params == peers.build_keras_vit(arch).count_params() == 5_717_416


def test_peers_reject_what_they_cannot_build():
    with pytest.raises(ValueError, match="num_register_tokens"):
        peers.check_comparable(peers.resolve_arch(dict(TINY, num_register_tokens=4)))
    with pytest.raises(ValueError, match="registry name or an architecture dict"):
        peers.resolve_arch(42)


@pytest.mark.parametrize("lib", ["keras_vit", "keras_hub", "timm"])
def test_inference_case_runs_for_every_library(lib):
    case = dict(
        kind="infer",
        lib=lib,
        model=TINY,
        precision="float32",
        batches=[1, 2],
        jit=False if lib == "keras_vit" else "auto",
        **QUICK,
    )
    result = worker.run_case(case)
    assert [row["batch"] for row in result["batches"]] == [1, 2]
    assert all(row["images_per_s"] > 0 and len(row["seconds"]) == 1 for row in result["batches"])
    assert result["flops_per_image"] == flops.vit_forward_flops(result["arch"])


def test_training_cases_follow_the_same_loss_curve():
    common = dict(kind="train", model=TINY, precision="float32", batch=4, warmup=1, steps=2)
    hub = worker.run_case(dict(common, lib="keras_hub", jit="auto"))
    for jit in (False, True):  # XLA (the library's float32 setting) walks the same curve
        ours = worker.run_case(dict(common, lib="keras_vit", jit=jit, init_from="keras_hub"))
        assert len(hub["losses"]) == len(ours["losses"]) == 3
        assert hub["losses"][-1] < hub["losses"][0]  # the optimizer steps really happen
        np.testing.assert_allclose(ours["losses"], hub["losses"], rtol=1e-4)
        assert len(ours["seconds"]) == 2 and ours["images_per_s"] > 0


def test_harness_library_settings_are_the_library_rule():
    import tensorflow as tf

    from keras_vit.training.xla import resolve_jit_compile

    for model in (cases.CIFAR_MODEL, cases.TI_MODEL):
        width = peers.resolve_arch(model)["hidden_dim"]
        for precision, jit in cases.KERAS_VIT_TRAIN_JIT.items():
            policy = "float32" if precision == "float32" else "mixed_bfloat16"
            assert resolve_jit_compile("auto", policy, tf.distribute.get_strategy(), gpus=[], width=width) is jit


def test_matmul_case_reports_a_rate():
    result = worker.run_case(dict(kind="matmul", size=128, dtypes=["float32", "bfloat16"], **QUICK))
    assert set(result["rates"]) == {"float32", "bfloat16"}
    assert all(rate["gflops"] > 0 for rate in result["rates"].values())


def test_worker_rejects_bad_cases():
    with pytest.raises(ValueError, match="kind"):
        worker.run_case(dict(kind="fly"))
    with pytest.raises(ValueError, match="precision"):
        worker.run_case(dict(kind="infer", lib="keras_vit", model=TINY, precision="float16", batches=[1]))


def test_time_calls_stops_at_the_budget_but_keeps_the_minimum():
    calls = []
    timing = worker.time_calls(lambda: calls.append(1), warmup=2, repeats=50, min_repeats=3, budget_s=0.0)
    assert len(timing["seconds"]) == 3 and len(calls) == 5  # first + 1 warm-up + 3 timed


def test_step_timer_recovers_per_step_losses_from_running_means():
    timer = worker._StepTimer()
    for step, loss in enumerate([4.0, 2.0, 3.0]):
        timer.means.append((timer.means[-1] * step + loss) / (step + 1) if timer.means else loss)
    np.testing.assert_allclose(timer.losses(), [4.0, 2.0, 3.0])


def _record(case, result, rss=100.0):
    return dict(
        id=cases.case_id(case),
        case=case,
        ok=True,
        result=result,
        peak_rss_mib=rss,
        load_before=[1.0, 1.0, 1.0],
        load_after=[1.0, 1.0, 1.0],
    )


def test_report_computes_ratios_and_targets():
    base = "vit_base_patch16_224"
    arch = peers.resolve_arch(base)
    per_image = flops.vit_forward_flops(arch)

    def infer(lib, rate):
        case = dict(kind="infer", lib=lib, model=base, precision="float32", batches=[8], jit="auto")
        row = dict(
            batch=8,
            images_per_s=rate,
            median_s=8 / rate,
            seconds=[8 / rate],
            first_call_s=1.0,
            median_cpu_s=8 / rate * 2,
        )  # both cores busy: twice the wall time in CPU time
        return _record(case, dict(batches=[row], flops_per_image=per_image, arch=arch))

    matmul_cpu_s = 2 * 2048**3 / 100e9 * 1.6  # the matmul kept 1.6 cores busy
    matmul = _record(
        dict(kind="matmul", tag="start"),
        dict(size=2048, rates={"float32": dict(gflops=100.0, median_cpu_s=matmul_cpu_s)}),
    )
    results = [matmul, infer("keras_vit", 2.0), infer("keras_hub", 1.6), infer("timm", 1.0)]
    checks = {c["target"]: c for c in report.target_checks(results)}
    hub_check = checks["ViT-B/16 b8 fp32 >= 1.05x keras-hub"]
    assert hub_check["measured"] == pytest.approx(1.25) and hub_check["met"]
    timm_check = checks["ViT-B/16 b8 fp32 >= 1.8x timm"]
    assert timm_check["measured"] == pytest.approx(2.0) and timm_check["met"]
    fraction = checks["ViT-B/16 b8 fp32 >= 0.95 of the matmul rate"]
    assert fraction["measured"] == pytest.approx(2.0 * per_image / 1e9 / 100.0) and not fraction["met"]
    # Per CPU-second: (1 img/CPU-s x FLOPs) over the matmul's 100 / 1.6 GFLOP per CPU-second.
    assert fraction["per_cpu_second"] == pytest.approx(1.0 * per_image / 1e9 / (100.0 / 1.6))
    text = report.markdown(dict(mode="test", machine=machine.describe(), results=results))
    assert "| vit_base_patch16_224 | float32 | 8 | 1.25 | 2.00 | 1.60 | 1.25 | 2.00 |" in text
    assert "**no**" in text  # misses are shown, not hidden
    # A wall-clock win that the CPU time does not back (a bigger share of shared cores) is not "met".
    slow_cpu = infer("keras_vit", 2.0)
    slow_cpu["result"]["batches"][0]["median_cpu_s"] = 8.0  # 1 img/CPU-s against keras-hub's 0.8 -> 1.25x ...
    hub = infer("keras_hub", 1.6)
    hub["result"]["batches"][0]["median_cpu_s"] = 8 / 1.6 / 1.0  # ... now 1.6 img/CPU-s -> 0.625x
    check = {c["target"]: c for c in report.target_checks([matmul, slow_cpu, hub])}[
        "ViT-B/16 b8 fp32 >= 1.05x keras-hub"
    ]
    assert check["measured"] == pytest.approx(1.25) and check["per_cpu_second"] == pytest.approx(0.625)
    assert check["met"] is False


def test_report_checks_training_targets_per_batch_and_shows_the_products_ceiling():
    ti = "vit_tiny_patch16_224"
    arch = peers.resolve_arch(ti)

    def train(lib, precision, batch, rate):
        case = dict(
            kind="train",
            lib=lib,
            model=ti,
            precision=precision,
            batch=batch,
            jit="auto" if lib == "keras_hub" else False,
        )
        return _record(
            case,
            dict(
                batch=batch,
                images_per_s=rate,
                median_s=batch / rate,
                seconds=[batch / rate],
                median_cpu_s=batch / rate,
                losses=[1.0],
                flops_per_image=1.0,
                arch=arch,
            ),
        )

    results = [
        train("keras_hub", "float32", 8, 10.0),
        train("keras_vit", "bfloat16", 8, 15.0),
        train("keras_hub", "float32", 32, 10.0),
        train("keras_vit", "bfloat16", 32, 19.0),
    ]
    checks = {c["target"]: c for c in report.target_checks(results)}
    small = checks[f"training {ti} b8 mixed bf16 (recipes' default here) >= 1.8x keras-hub default fit (fp32)"]
    large = checks[f"training {ti} b32 mixed bf16 (recipes' default here) >= 1.8x keras-hub default fit (fp32)"]
    assert small["measured"] == pytest.approx(1.5) and small["met"] is False
    assert large["measured"] == pytest.approx(1.9) and large["met"] is True

    base = "vit_base_patch16_224"
    arch = peers.resolve_arch(base)
    products = _record(
        dict(kind="products", model=base, batch=8, precision="float32"),
        dict(batch=8, images_per_s=10.0, median_s=0.8, flops_per_image=1e10, arch=arch),
    )
    ours = _record(
        dict(kind="infer", lib="keras_vit", model=base, precision="float32", batches=[8], jit=False),
        dict(batches=[dict(batch=8, images_per_s=9.0, median_s=8 / 9)], flops_per_image=1e10, arch=arch),
    )
    matmul = _record(dict(kind="matmul", tag="start"), dict(size=2048, rates={"float32": dict(gflops=125.0)}))
    lines = report.products_lines([matmul, products, ours])
    assert lines == [
        f"{base}'s forward matrix products alone (batch 8, float32, one after the other, nothing "
        "else): 100.0 GFLOP/s, 0.80 of the float32 matmul rate; keras_vit's forward runs at 0.90 of that."
    ]


def test_products_case_times_the_model_matmuls():
    result = worker.run_case(dict(kind="products", model=TINY, batch=2, precision="float32", **QUICK))
    assert result["batch"] == 2 and result["images_per_s"] > 0
    assert result["flops_per_image"] == flops.vit_forward_flops(result["arch"])


def test_subprocess_failure_is_recorded_not_raised():
    record = run.run_one(dict(kind="fly", model="x", lib="keras_vit", precision="float32"), timeout_s=60)
    assert record["ok"] is False and "kind" in record["error"]
    assert len(record["load_before"]) == 3 and record["wall_s"] > 0


def test_case_lists_are_well_formed():
    full = cases.full_cases()
    ids = [cases.case_id(c) for c in full]
    assert len(ids) == len(set(ids))
    for model in cases.INFER_MODELS:
        for precision in cases.PRECISIONS:
            for lib in ("keras_vit", "keras_hub", "timm"):
                assert any(
                    c["kind"] == "infer"
                    and c["lib"] == lib
                    and c["model"] == model
                    and c["precision"] == precision
                    and set(c["batches"]) == {1, 8, 32}
                    for c in full
                )
    json.dumps(full)  # every case must travel as JSON to its subprocess


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--smoke",
            "--only",
            "matmul",
            "--only",
            "infer/keras_vit",
            "--out-dir",
            str(tmp_path),
            "--name",
            "t",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=run.ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "t.json").read_text())
    assert [r["ok"] for r in record["results"]] == [True, True]
    assert "TensorFlow 64x64 matmul (start of the run): float32" in (tmp_path / "t.md").read_text()


def test_recipe_table_compares_bfloat16_with_float32():
    def recipe(precision, accuracy, seed=None):
        overrides = {} if seed is None else dict(seed=seed)
        case = dict(kind="recipe", recipe="digits_vit", precision=precision, overrides=overrides)
        return _record(
            case,
            dict(recipe="digits_vit", overrides=overrides, train_and_eval_s=60.0, metrics=dict(test_accuracy=accuracy)),
        )

    assert cases.case_id(cases.accuracy_cases()[1]) == "recipe/digits_vit/bfloat16"
    lines = report.recipe_table([recipe("float32", 0.975), recipe("bfloat16", 0.9694)])
    assert lines[2].startswith("| digits_vit | default | float32 | 97.50% | n/a |")
    assert lines[3].startswith("| digits_vit | default | bfloat16 | 96.94% | -0.56 |")
    assert [cases.case_id(c) for c in cases.accuracy_cases(seeds=(1,))] == [
        "recipe/digits_vit/float32/seed=1",
        "recipe/digits_vit/bfloat16/seed=1",
    ]
    # Per seed, bf16 is compared with float32 of the same seed; the means close the table.
    lines = report.recipe_table(
        [
            recipe("float32", 0.98, 1),
            recipe("bfloat16", 0.97, 1),
            recipe("float32", 0.96, 2),
            recipe("bfloat16", 0.99, 2),
        ]
    )
    assert lines[3].startswith("| digits_vit | 1 | bfloat16 | 97.00% | -1.00 |")
    assert lines[5].startswith("| digits_vit | 2 | bfloat16 | 99.00% | 3.00 |")
    assert lines[6] == "| mean of 2 | | float32 | 97.00% | n/a | | |"
    assert lines[7] == "| mean of 2 | | bfloat16 | 98.00% | 1.00 | | |"


def test_ab_summary_reports_medians_against_the_first_case():
    from benchmarks import ab

    text = ab.summarize({"a": [(1.0, 2.0), (3.0, 4.0), (2.0, 3.0)], "b": [(4.0, 3.0), (4.0, 9.0), (5.0, 6.0)]})
    assert "| a | 3 | 2.00 (1.00-3.00) | 3.00 (2.00-4.00) | 1.00 | 1.00 |" in text
    assert "| b | 3 | 4.00 (4.00-5.00) | 6.00 (3.00-9.00) | 2.00 | 2.00 |" in text
    assert ab.rates(dict(batches=[dict(batch=8, median_s=2.0, median_cpu_s=4.0)])) == (4.0, 2.0)
    assert ab.rates(dict(batch=32, median_s=1.0, median_cpu_s=2.0)) == (32.0, 16.0)


def test_paired_variants_are_parsed_and_bad_ones_named():
    assert paired.parse_variant("keras_vit:bfloat16:xla") == ("keras_vit", "bfloat16", True)
    assert paired.parse_variant("keras_hub:float32:auto") == ("keras_hub", "float32", "auto")
    assert paired.parse_variant("matmul:float32") == ("matmul", "float32", False)
    assert paired.parse_variant("timm:bfloat16") == ("timm", "bfloat16", False)
    for bad in ("timm:float32:off", "keras_vit:float16:off", "keras_vit:float32", "matmul:int8"):
        with pytest.raises(ValueError, match="library:precision:xla"):
            paired.parse_variant(bad)


def test_paired_run_interleaves_variants_and_reports_per_round_ratios():
    arch = peers.resolve_arch(TINY)
    built = [
        paired.build_step(task, variant, arch, 2)
        for task, variant in (
            ("train", ("keras_hub", "float32", "auto")),
            ("train", ("keras_vit", "float32", False)),
            ("train", ("keras_vit", "bfloat16", False)),
            ("train", ("matmul", "float32", False)),
        )
    ]
    assert built[1][1] == 2 * flops.vit_train_flops(arch) and built[3][1] == 2 * 2048**3
    seconds = paired.interleave([step for step, _ in built], rounds=2, calls=1)
    assert seconds.shape == (2, 4) and np.all(seconds > 0)
    names = ["keras_hub:float32:auto", "keras_vit:float32:off", "keras_vit:bfloat16:off", "matmul:float32"]
    table = paired.summarize(names, seconds, [flops_per_call for _, flops_per_call in built])
    rows = table.splitlines()[2:]
    assert rows[0].split("|")[3].strip() == "1.00 (1.00-1.00)" and rows[3].split("|")[5].strip().startswith("1.00")
    assert rows[3].split("|")[3].strip() == "n/a"
    # a known case of the arithmetic: B twice as fast as A in one round and as fast in the other
    table = paired.summarize(["a:float32:off", "b:float32:off"], np.array([[2.0, 1.0], [1.0, 1.0]]), [1e9, 1e9])
    assert "| b:float32:off | 1.0 | 1.50 (1.25-1.75) | 1/2 | n/a |" in table


def test_transformer_optimizer_benchmark_times_keras_adam_against_the_fused_one(capsys):
    keras_adam, fused = transformer_optimizer.build_steps(width=16, batch=2, tokens=4, layers=1)
    assert float(keras_adam()) == pytest.approx(float(fused()), rel=1e-6)  # same seed: same first loss
    assert transformer_optimizer.main(["--width", "16", "--batch", "2", "--rounds", "2", "--calls", "1"]) == 0
    assert re.search(r"FusedAdam \d+\.\d{3}x \(quartiles \S+\), faster in \d/2 rounds", capsys.readouterr().out)


def test_op_profile_groups_kernels_by_type_and_layer_norm_scope():
    times = collections.Counter(
        {
            "vit/block_0/attn/qkv/MatMul:_MklNativeFusedMatMul": 0.6,
            "vit/block_0/norm1/Mul:Mul": 0.1,
            "vit/block_0/norm1/ArithmeticOptimizer/AddOpsRewrite_add:AddN": 0.1,
            "vit/block_0/mlp/Mul:Mul": 0.2,
            "ExecutorState::Process": 5.0,
        }
    )
    rows = {op: (ms, share) for op, ms, share in op_profile.by_op_type(times, steps=2)}
    assert set(rows) == {"_MklNativeFusedMatMul", "LayerNorm/Mul", "LayerNorm/AddN", "Mul"}
    assert rows["_MklNativeFusedMatMul"] == pytest.approx((300.0, 0.6))
    assert rows["LayerNorm/Mul"] == pytest.approx((50.0, 0.1))
    assert "layer norm 20.0%" in op_profile.markdown(list(op_profile.by_op_type(times, 2)))


def test_op_profile_groups_kernels_by_block_sub_layer():
    times = collections.Counter(
        {
            "gradient_tape/vit_1/block_0_1/attn_1/qkv_1/MatMul/MatMul:_MklMatMul": 0.4,
            "vit/block_3/attn/Softmax:_MklSoftmax": 0.1,
            "vit/block_3/mlp/Erf:Erf": 0.1,
            "vit_1/block_0_1/norm1_1/backward/mul:Mul": 0.2,
            "adam_w/Sub:Sub": 0.1,
            "AddN:AddN": 0.1,
            "CpuExecutable::ExecuteAsyncOnStream": 0.25,
            "ExecutorState::ProcessAsync::Start": 0.3,
            "ExecutorState::Process": 5.0,
        }
    )
    rows = {layer: (ms, share) for layer, ms, share in op_profile.by_layer(times, steps=1)}
    assert set(rows) == {"matmul", "attn", "mlp", "norm", "optimizer", "other", op_profile.XLA_LABEL}
    assert rows["matmul"] == pytest.approx((400.0, 0.32))
    assert rows["norm"] == pytest.approx((200.0, 0.16))
    assert rows[op_profile.XLA_LABEL] == pytest.approx((250.0, 0.2))  # its async wrapper is not counted again
    table = op_profile.markdown(op_profile.by_layer(times, 1), first_column="sub-layer")
    assert "| sub-layer |" in table and "matmul kernels 32.0%, layer norm 16.0%" in table


def test_vit_mlp_matmuls_run_fused_with_bias_and_gelu():
    """The 2-D Dense layers let TensorFlow's CPU rewriter fuse bias and exact GELU into the matmul."""
    arch = peers.resolve_arch(TINY)
    step, _ = paired.build_step("predict", ("keras_vit", "float32", False), arch, 2)
    ops_seen = {op for op, _, _ in op_profile.profile_step(step, steps=1)}
    assert any("FusedMatMul" in op for op in ops_seen), ops_seen
    assert not {"Erf", "BiasAdd"} & ops_seen, ops_seen


def test_forward_matmuls_list_each_product_at_the_model_shapes():
    arch = peers.resolve_arch("vit_base_patch16_224")
    products = flops.vit_forward_matmuls(arch, batch=8)
    assert len(products) == 1 + 6 * 12 + 1  # patch projection, 6 per block, head
    assert products[0] == (1, 8 * 196, 16 * 16 * 3, 768)
    assert products[1:7] == [
        (1, 8 * 197, 768, 2304),
        (8 * 12, 197, 64, 197),
        (8 * 12, 197, 197, 64),
        (1, 8 * 197, 768, 768),
        (1, 8 * 197, 768, 3072),
        (1, 8 * 197, 3072, 768),
    ]
    assert sum(c * m * k * n for c, m, k, n in products) == 8 * flops.vit_forward_macs(arch)
    with pytest.raises(ValueError, match="num_heads"):
        flops.vit_forward_matmuls(dict(arch, num_heads=5))


def test_paired_products_variant_runs_the_model_matmuls_alone():
    arch = peers.resolve_arch(TINY)
    assert paired.parse_variant("products:float32") == ("products", "float32", False)
    built = [
        paired.build_step("predict", variant, arch, 2)
        for variant in (("keras_vit", "float32", False), ("products", "float32", False), ("matmul", "float32", False))
    ]
    assert built[1][1] == built[0][1] == 2 * flops.vit_forward_flops(arch)
    assert built[1][0]().shape == (1, 1)
    seconds = paired.interleave([step for step, _ in built], rounds=2, calls=1)
    table = paired.summarize(
        ["keras_vit:float32:off", "products:float32", "matmul:float32"], seconds, [f for _, f in built]
    )
    rows = table.splitlines()
    assert rows[0].endswith("/ own products |") and rows[3].split("|")[6].strip().startswith("1.00")
    assert rows[4].split("|")[6].strip() == "n/a"
    with pytest.raises(ValueError, match="predict only"):
        paired.build_step("train", ("products", "float32", False), arch, 2)


def test_paired_rows_are_compared_with_the_ceilings_of_their_own_precision():
    names = ["keras_vit:float32:off", "keras_vit:bfloat16:off", "products:float32", "products:bfloat16"]
    names += ["matmul:float32", "matmul:bfloat16"]
    seconds = np.array([[4.0, 2.0, 2.0, 1.0, 1.0, 0.25]])  # every variant does 1 GFLOP per call
    rows = paired.summarize(names, seconds, [1e9] * 6).splitlines()[2:]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    assert [c[4][:4] for c in cells] == ["0.25", "0.12", "0.50", "0.25", "1.00", "1.00"]  # / matmul, same precision
    assert [c[5][:4] for c in cells] == ["0.50", "0.50", "1.00", "1.00", "n/a", "n/a"]  # / own products, same precision


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_lean_forward_gives_the_model_logits_with_its_affines_folded(qkv_bias, rng):
    arch = peers.resolve_arch({**TINY, "depth": 2, "qkv_bias": qkv_bias})
    model = peers.build_keras_vit(arch, dtype="float32")
    for variable in model.weights:  # random values everywhere: the head and biases start at zero, gammas at one
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.5)
    images = worker.synthetic_images(arch, 3)
    expected = model.predict_on_batch(images)
    np.testing.assert_allclose(
        lean_forward.lean_forward(model)(images).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )
    assert paired.parse_variant("lean:float32") == ("lean", "float32", False)
    with pytest.raises(ValueError, match="lean:float32"):
        paired.parse_variant("lean:bfloat16")
    with pytest.raises(ValueError, match="predict only"):
        paired.build_step("train", ("lean", "float32", False), arch, 2)
    step, flops_per_call = paired.build_step("predict", ("lean", "float32", False), arch, 2)
    assert step().shape == (2, arch["num_classes"]) and flops_per_call == 2 * flops.vit_forward_flops(arch)


def test_lean_forward_names_what_it_does_not_cover():
    model = peers.build_keras_vit(peers.resolve_arch({**TINY, "pooling": "gap", "class_token": False}))
    with pytest.raises(ValueError, match="plain class-token ViT only.*'pooling': 'gap'"):
        lean_forward.lean_forward(model)


def test_paired_timm_variant_times_predict():
    arch = peers.resolve_arch(TINY)
    step, flops_per_call = paired.build_step("predict", ("timm", "float32", False), arch, 2)
    step()
    assert flops_per_call == 2 * flops.vit_forward_flops(arch)


def test_ab_case_root_must_be_a_checkout(tmp_path):
    from benchmarks import ab

    with pytest.raises(ValueError, match=r"Received: root="):
        ab.run_pinned({"kind": "matmul", "root": str(tmp_path)}, cpus=None, timeout_s=5)


def test_attention_memory_reports_peak_rss_of_a_forward():
    """A tiny model in a fresh process: the peak after the forward is at least the peak after building."""
    from benchmarks import attention_memory

    arch = dict(image_size=28, patch_size=14, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64)
    row = attention_memory.peak_rss(attention_memory.ROOT, arch, batch=2, call="eager", timeout_s=300)
    assert row["peak_mib"] >= row["built_mib"] > 50
    with pytest.raises(ValueError, match=r"Received: call='jit'"):
        attention_memory.peak_rss(attention_memory.ROOT, arch, batch=2, call="jit")


def test_bf16_agreement_compares_top1_and_logits():
    from benchmarks.bf16_agreement import compare

    reference = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.4]])
    other = np.array([[0.9, 0.0], [0.0, 1.2], [0.4, 0.45]])
    assert compare(reference, other) == dict(n=3, top1_agreement=2 / 3, max_logit_diff=pytest.approx(0.2))


@pytest.mark.parametrize(
    "flags, kind",
    [
        ({"amx_bf16", "avx512_bf16", "avx512_fp16"}, "AMX (bf16 matrix tiles)"),
        ({"avx512_bf16"}, "AVX512_BF16 (bf16 dot products, no AMX)"),
        (set(), "no native bf16 (emulated)"),
    ],
)
def test_machine_names_the_kind_of_host(flags, kind):
    from benchmarks import machine, report

    assert machine.host_kind(flags) == kind
    info = dict(amx_bf16="amx_bf16" in flags, avx512_bf16="avx512_bf16" in flags, avx512_fp16=False, host_kind=kind)
    assert report._cpu_features(info).endswith(f"AVX512_FP16: no; host: {kind}")
    described = machine.describe()
    assert {"amx_bf16", "avx512_bf16", "avx512_fp16", "host_kind", "cpu"} <= set(described)


def test_paired_times_timm_training_and_compares_rows_with_the_matmul_of_their_precision():
    arch = peers.resolve_arch(TINY)
    variants = [("timm", "bfloat16", False), ("timm", "float32", False), ("matmul", "bfloat16", False)]
    built = [paired.build_step("train", variant, arch, 2) for variant in variants]
    assert built[0][1] == 2 * flops.vit_train_flops(arch)
    first, second = built[1][0](), built[1][0]()
    assert np.isfinite(first) and second != first  # AdamW steps move the weights
    names = ["timm:bfloat16", "timm:float32", "matmul:bfloat16"]
    rows = paired.summarize(names, np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]), [4e9, 2e9, 8e9]).splitlines()
    assert "in its precision" in rows[0]
    assert rows[2].split("|")[5].strip() == "0.50 (0.50-0.50)"  # bfloat16 row over the bfloat16 matmul
    assert rows[3].split("|")[5].strip() == "n/a"  # no float32 matmul in the rotation


# Family models (SigLIP, EVA-02, DINOv2, CLIP, BEiT) at depth 1 and 112 pixels: every side builds them by name.
FAMILY_SMALL = dict(depth=1, image_size=112)
FAMILY_NAMES = (
    "vit_base_patch16_siglip_224",
    "eva02_small_patch14_224",
    "vit_base_patch14_dinov2",
    "vit_base_patch16_clip_224",
    "beit_base_patch16_224",
)


def test_family_names_resolve_by_name_and_plain_vits_stay_plain():
    assert "registry_name" not in peers.resolve_model("vit_base_patch16_224")
    for name in FAMILY_NAMES:  # CLIP is a ViT, but its pre-norm and epsilon are family options the peers lack
        arch = peers.resolve_model(name, **FAMILY_SMALL)
        assert arch["registry_name"] == name and arch["image_size"] == [112, 112]
    with pytest.raises(ValueError, match="pre_norm"):
        peers.check_comparable(peers.resolve_arch("vit_base_patch16_clip_224"))
    with pytest.raises(ValueError, match=r"overrides .*Received: \['mlp_dim'\]"):
        peers.family_arch("eva02_small_patch14_224", mlp_dim=8)


def test_recorded_timm_products_equal_the_plain_vit_formula():
    recorded = flops.timm_forward_matmuls("vit_base_patch16_224", batch=2, depth=2)
    assert sorted(recorded) == sorted(
        flops.vit_forward_matmuls(peers.resolve_arch("vit_base_patch16_224") | {"depth": 2}, 2)
    )


@pytest.mark.parametrize("name", FAMILY_NAMES[:2] + FAMILY_NAMES[4:])
def test_family_flops_match_torch_flop_counter(name):
    # torch's own counter on timm's real forward (MAP head, SwiGLU, relative bias) is the outside reference;
    # it counts attention's products when they run as matmuls (its CPU flash kernel has no formula)
    arch = peers.resolve_model(name, **FAMILY_SMALL)
    model = peers.build_timm(arch)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(torch.zeros(1, 3, 112, 112))
    assert flops.forward_flops(arch) == counter.get_total_flops() > 0


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_model_is_the_same_size_on_every_side(name):
    arch = peers.resolve_model(name, **FAMILY_SMALL)
    ours = peers.build_keras_vit(arch)
    assert ours.count_params() == sum(p.numel() for p in peers.build_timm(arch).parameters())
    if arch["family"] in peers.KERAS_HUB_FAMILIES:
        hub = peers.build_keras_hub(arch)
        assert hub.output_shape == ours.output_shape
        # keras-hub's towers hold a few more position weights (at 112 px: SigLIP 49, DINOv2 65 x 768)
        assert abs(hub.count_params() - ours.count_params()) < 0.01 * ours.count_params()
    else:
        with pytest.raises(ValueError, match=r"keras-hub has no model of the .* family"):
            peers.build_keras_hub(arch)


def test_paired_times_a_family_model_against_timm_keras_hub_and_its_products():
    arch = peers.resolve_model("vit_base_patch16_siglip_224", **FAMILY_SMALL)
    variants = [
        ("keras_vit", "float32", False),
        ("keras_hub", "float32", "auto"),
        ("timm", "float32", False),
        ("keras_vit", "bfloat16", False),
        ("products", "float32", False),
    ]
    built = [paired.build_step("predict", variant, arch, 2) for variant in variants]
    assert {flops_per_call for _, flops_per_call in built} == {2 * flops.forward_flops(arch)}
    seconds = paired.interleave([step for step, _ in built], rounds=1, calls=1)
    names = [
        "keras_vit:float32:off",
        "keras_hub:float32:auto",
        "timm:float32",
        "keras_vit:bfloat16:off",
        "products:float32",
    ]
    rows = paired.summarize(names, seconds, [f for _, f in built]).splitlines()
    assert len(rows) == 2 + len(names) and rows[2].split("|")[3].strip() == "1.00 (1.00-1.00)"
    with pytest.raises(ValueError, match="plain ViT only"):
        paired.build_step("predict", ("lean", "float32", False), arch, 2)


def test_paired_command_line_takes_a_family_name(capsys):
    argv = ["--task", "predict", "--model", "eva02_small_patch14_224", "--depth", "1", "--image-size", "112"]
    assert (
        paired.main(argv + ["--batch", "2", "--rounds", "1", "--calls", "1", "keras_vit:float32:off", "timm:float32"])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        out.startswith("predict eva02_small_patch14_224, depth 1, image_size 112 batch 2") and "| timm:float32 |" in out
    )


def test_products_case_of_a_family_model_runs_in_the_worker():
    case = dict(kind="products", model="eva02_small_patch14_224", precision="float32", batch=1, **QUICK)
    arch = peers.resolve_model("eva02_small_patch14_224")
    result = worker.run_case(dict(case))
    assert result["flops_per_image"] == flops.forward_flops(arch) and result["images_per_s"] > 0
