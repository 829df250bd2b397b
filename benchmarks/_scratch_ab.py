"""Scratch A/B of attention/MLP layouts (not shipped). python benchmarks/_scratch_ab.py OUTFILE"""
import os, sys, time, math, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
T0 = time.time()
LIMIT = float(os.environ.get("AB_LIMIT", 420))
out = open(sys.argv[1], "a")
def log(*a):
    s = " ".join(str(x) for x in a); print(s, flush=True); out.write(s + "\n"); out.flush()
import numpy as np, tensorflow as tf, keras
from keras import ops
import keras_vit
from keras_vit.layers import attention as A, mlp as M
try:
    import keras_hub
    from benchmarks import peers
    HUB = True
except Exception as e:  # noqa
    log("no keras_hub", e); HUB = False
log("cpus", os.sched_getaffinity(0), "tf", tf.__version__)

orig_mlp, orig_attn = M.Mlp.call, A.MultiHeadSelfAttention.call

def mlp2d(self, tokens, training=None):
    shape = ops.shape(tokens)
    x = ops.reshape(tokens, (-1, tokens.shape[-1]))
    x = ops.add(ops.matmul(x, self.fc1.kernel), self.fc1.bias)
    x = M.gelu_erf(x)
    x = ops.add(ops.matmul(x, self.fc2.kernel), self.fc2.bias)
    return ops.reshape(x, (shape[0], shape[1], x.shape[-1]))

def _end(self, mixed, weights, b, l, ret):
    outputs = self.proj(ops.reshape(mixed, (b, l, self.num_heads * self.head_dim)))
    return (outputs, weights) if ret else outputs

def attn_einsum(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
    b, l = ops.shape(tokens)[0], ops.shape(tokens)[1]
    qkv = ops.reshape(self.qkv(tokens), (b, l, 3, self.num_heads, self.head_dim))
    q, k, v = ops.unstack(qkv, 3, axis=2)
    logits = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32") * (1.0 / math.sqrt(self.head_dim)), ops.cast(k, "float32"))
    w = ops.softmax(logits, axis=-1)
    mixed = ops.einsum("bhqk,bkhd->bqhd", ops.cast(w, v.dtype), v)
    return _end(self, mixed, w, b, l, return_attention_scores)

def attn_t_einsum(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
    b, l = ops.shape(tokens)[0], ops.shape(tokens)[1]
    qkv = ops.reshape(self.qkv(tokens), (b, l, 3, self.num_heads, self.head_dim))
    q, k, v = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
    logits = ops.einsum("bhqd,bhkd->bhqk", ops.cast(q, "float32") * (1.0 / math.sqrt(self.head_dim)), ops.cast(k, "float32"))
    w = ops.softmax(logits, axis=-1)
    mixed = ops.transpose(ops.matmul(ops.cast(w, v.dtype), v), (0, 2, 1, 3))
    return _end(self, mixed, w, b, l, return_attention_scores)

def attn_t_einsum_out(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
    b, l = ops.shape(tokens)[0], ops.shape(tokens)[1]
    qkv = ops.reshape(self.qkv(tokens), (b, l, 3, self.num_heads, self.head_dim))
    q, k, v = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
    logits = ops.einsum("bhqd,bhkd->bhqk", ops.cast(q, "float32") * (1.0 / math.sqrt(self.head_dim)), ops.cast(k, "float32"))
    w = ops.softmax(logits, axis=-1)
    mixed = ops.einsum("bhqk,bhkd->bqhd", ops.cast(w, v.dtype), v)
    return _end(self, mixed, w, b, l, return_attention_scores)

ATTN = dict(base=orig_attn, einsum=attn_einsum, t_einsum=attn_t_einsum, t_einsum_out=attn_t_einsum_out)
MLP = dict(base=orig_mlp, mlp2d=mlp2d)

def build(lib, variant, arch, policy):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    if lib == "hub":
        return peers.build_keras_hub(peers.resolve_arch(arch))
    a, m = variant.split("+")
    A.MultiHeadSelfAttention.call, M.Mlp.call = ATTN[a], MLP[m]
    return keras_vit.ViT(**arch)

def ab_predict(configs, arch, batch, rounds):
    x = np.random.default_rng(0).standard_normal((batch, *[arch["image_size"]] * 2, 3)).astype("float32")
    fns, ref = {}, {}
    for lib, variant, policy, jit in configs:
        key = f"{lib}:{variant}:{policy}:jit={jit}"
        m = build(lib, variant, dict(arch, num_classes=0) if lib != "hub" else arch, policy)
        m.compile(jit_compile=jit) if jit is not None else m.compile()
        t = time.time(); y = m.predict_on_batch(x); first = time.time() - t
        m.predict_on_batch(x)
        if lib != "hub":
            r = ref.setdefault(policy, y)
            log(key, "first %.1fs" % first, "maxdiff %.2e" % float(np.abs(y.astype('float32') - r.astype('float32')).max()))
        fns[key] = m.predict_on_batch
        A.MultiHeadSelfAttention.call, M.Mlp.call = orig_attn, orig_mlp
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter(); f(x); times[k].append(time.perf_counter() - t)
    for k, ts in times.items():
        log("PREDICT", k, "b%d" % batch, "median %.1f ms  min %.1f ms" % (1e3 * np.median(ts), 1e3 * min(ts)))

def ab_train(configs, arch, batch, steps):
    x = np.random.default_rng(0).standard_normal((batch, *[arch["image_size"]] * 2, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, arch["num_classes"], batch)
    for lib, variant, policy, jit in configs:
        if time.time() - T0 > LIMIT: log("time limit"); return
        m = build(lib, variant, arch, policy)
        kw = {} if jit is None else dict(jit_compile=jit)
        m.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kw)
        t = time.time(); m.train_on_batch(x, y); first = time.time() - t
        m.train_on_batch(x, y)
        ts = []
        for _ in range(steps):
            t = time.perf_counter(); m.train_on_batch(x, y); ts.append(time.perf_counter() - t)
        A.MultiHeadSelfAttention.call, M.Mlp.call = orig_attn, orig_mlp
        log("TRAIN", lib, variant, policy, "jit", jit, arch.get("patch_size"), "b%d" % batch,
            "first %.1fs median %.1f ms min %.1f ms -> %.1f img/s" % (first, 1e3 * np.median(ts), 1e3 * min(ts), batch / np.median(ts)))

B2 = dict(image_size=224, patch_size=16, hidden_dim=768, depth=2, num_heads=12, mlp_dim=3072)
CIFAR = dict(image_size=32, patch_size=4, hidden_dim=192, depth=9, num_heads=12, mlp_dim=384, num_classes=10)
TI = dict(image_size=224, patch_size=16, hidden_dim=192, depth=12, num_heads=3, mlp_dim=768, num_classes=1000)
which = os.environ.get("AB_WHAT", "predict,train").split(",")
variants = os.environ.get("AB_VARIANTS", "base+base,einsum+base,t_einsum+base,t_einsum_out+base,base+mlp2d").split(",")
if "predict" in which:
    for policy in ("float32", "mixed_bfloat16"):
        for jit in (False, True):
            cfg = [("vit", v, policy, jit) for v in variants] + ([("hub", "-", policy, jit if jit else None)] if HUB else [])
            ab_predict(cfg, B2, 8, int(os.environ.get("AB_ROUNDS", 5)))
            if time.time() - T0 > LIMIT: break
if "train" in which:
    tv = os.environ.get("AB_TRAIN_VARIANTS", "base+base,einsum+base").split(",")
    for arch, batch in ((CIFAR, 64), (TI, 16)):
        cfg = ([("hub", "-", "float32", None)] if HUB else []) + [("vit", v, "float32", j) for v in tv for j in (True, False)] \
              + [("vit", tv[0], "mixed_bfloat16", True), ("vit", tv[0], "mixed_bfloat16", False)]
        ab_train(cfg, arch, batch, int(os.environ.get("AB_STEPS", 4)))
log("total %.0fs" % (time.time() - T0))
