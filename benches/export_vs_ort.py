#!/usr/bin/env python3
"""`kiln export` checked against ONNX Runtime (not run by CI: it needs Python and PyPI).

  1. trains the digits CNN (`kiln train examples/models/digits_cnn.kiln --data digits ...
     --save W`), exports it with `kiln export ... --weights W`, checks the file with
     onnx.checker (full check, shape inference included) and compares `kiln run` on the
     `.kiln` model and its weights with ONNX Runtime on the exported file, on the same inputs;
  2. exports every zoo model in examples/models with its seeded default weights and compares
     `kiln run MODEL.kiln` (same seed) with ONNX Runtime on the export;
  3. does the same for one small graph per op kind, with attributes away from their defaults
     (ceil mode, count_include_pad, dilations, groups, output padding, sum pooling, ...).

Prints the max abs error and the max relative error (max |kiln - ORT| / max |ORT|) per model
and exits non-zero if any relative error is above 1e-4 or any step fails.

Usage: python3 benches/export_vs_ort.py [--kiln PATH] [--epochs N]
Without --kiln it runs `cargo build --release -p kiln` (a no-op when up to date). Without numpy,
onnx and onnxruntime in the running Python it reruns itself in the virtual environment shared
with benches/onnx_vs_ort.py (whose docstring says where).
"""

import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_vs_ort as common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "/tmp/kiln-export-check"
TOLERANCE = 1e-4

# One graph per op kind (text IR); each is exported with seeded weights and compared.
OPS = {
    "conv_grouped_dilated": """graph g { input %x: f32[2, 4, 9, 8]
      param %w: f32[6, 2, 3, 2]
      param %b: f32[6]
      %y = conv2d(%x, %w, %b) {stride=[2, 1], dilation=[2, 3], padding=[1, 0, 2, 3], groups=2}
      output %y }""",
    "conv_same_epilogue": """graph g { input %x: f32[1, 3, 7, 6]
      param %w: f32[4, 3, 2, 3]
      param %v: f32[4, 4, 2, 3]
      %a = conv2d(%x, %w) {stride=[2, 2], padding=same_lower, activation=leaky_relu, alpha=0.2}
      %b = conv2d(%a, %v) {padding=same_upper, activation=sigmoid}
      output %b }""",
    "conv_depthwise": """graph g { input %x: f32[1, 3, 8, 8]
      param %w: f32[3, 1, 3, 3]
      %y = conv2d(%x, %w) {padding=[1, 1, 1, 1], groups=3, activation=tanh}
      output %y }""",
    "conv_transpose": """graph g { input %x: f32[2, 4, 5, 4]
      param %w: f32[4, 3, 3, 2]
      param %b: f32[6]
      %y = conv_transpose2d(%x, %w, %b) {stride=[2, 3], dilation=[1, 2], padding=[1, 0, 2, 1], output_padding=[1, 2], groups=2}
      output %y }""",
    "max_pool_ceil": """graph g { input %x: f32[1, 2, 9, 10]
      %a = max_pool2d(%x) {kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=true}
      output %a }""",
    "max_pool_dilated": """graph g { input %x: f32[1, 2, 9, 10]
      %b = max_pool2d(%x) {kernel=[2, 2], stride=[1, 2], dilation=[2, 3]}
      output %b }""",
    "avg_pool_ceil_count_pad": """graph g { input %x: f32[1, 2, 9, 10]
      %a = avg_pool2d(%x) {kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=true, count_include_pad=true}
      output %a }""",
    "avg_pool_ceil": """graph g { input %x: f32[1, 2, 9, 10]
      %c = avg_pool2d(%x) {kernel=[2, 3], stride=[3, 2], padding=[1, 1, 0, 1], ceil_mode=true}
      output %c }""",
    "avg_pool_exclude_pad": """graph g { input %x: f32[1, 2, 9, 10]
      %b = avg_pool2d(%x) {kernel=[3, 3], stride=[2, 3], padding=[1, 1, 1, 1], count_include_pad=false}
      output %b }""",
    "avg_pool_dilated": """graph g { input %x: f32[1, 2, 9, 10]
      %y = avg_pool2d(%x) {kernel=[2, 2], stride=[1, 2], dilation=[2, 3], count_include_pad=true}
      output %y }""",
    "pool_ceil_adds_window": """graph g { input %x: f32[1, 2, 9, 10]
      %a = max_pool2d(%x) {kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 1], ceil_mode=true}
      %b = avg_pool2d(%x) {kernel=[2, 3], stride=[2, 3], padding=[1, 1, 0, 0], ceil_mode=true, count_include_pad=true}
      %c = avg_pool2d(%x) {kernel=[2, 3], stride=[2, 3], padding=[1, 1, 0, 0], ceil_mode=true, count_include_pad=false}
      output %a
      output %b
      output %c }""",
    "sum_pool": """graph g { input %x: f32[1, 3, 9, 10]
      %a = sum_pool2d(%x) {kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=true}
      %b = sum_pool2d(%a) {kernel=[2, 2], stride=[1, 1], dilation=[2, 1]}
      output %b }""",
    "global_pools": """graph g { input %x: f32[2, 3, 5, 7]
      %a = global_avg_pool(%x)
      %b = global_max_pool(%x)
      %c = add(%a, %b)
      output %c }""",
    "adaptive_pools": """graph g { input %x: f32[1, 2, 25, 12]
      %a = adaptive_avg_pool2d(%x) {output=[4, 3]}
      %b = adaptive_max_pool2d(%a) {output=[2, 1]}
      output %b }""",
    "activations": """graph g { input %x: f32[3, 7]
      %a = relu(%x)
      %b = leaky_relu(%a) {alpha=0.3}
      %c = sigmoid(%x)
      %d = tanh(%c)
      %e = add(%b, %d)
      output %e }""",
    "softmax": """graph g { input %x: f32[2, 3, 4]
      %a = softmax(%x) {axis=1}
      %b = log_softmax(%a) {axis=-1}
      output %b }""",
    "dense": """graph g { input %x: f32[4, 6]
      param %w: f32[5, 6]
      param %b: f32[5]
      param %v: f32[3, 5]
      %y = dense(%x, %w, %b)
      %z = dense(%y, %v)
      output %z }""",
    "matmul": """graph g { input %x: f32[2, 3, 4]
      param %w: f32[4, 5]
      %y = matmul(%x, %w)
      output %y }""",
    "shapes": """graph g { input %x: f32[2, 3, 4, 5]
      %b = reshape(%x) {shape=[0, -1, 10]}
      %c = transpose(%b) {perm=[2, 0, 1]}
      %d = flatten(%c) {axis=2}
      output %d }""",
    "binary": """graph g { input %x: f32[2, 3, 4]
      param %p: f32[3, 1]
      param %q: f32[4]
      %a = add(%x, %p)
      %b = sub(%a, %q)
      %c = mul(%b, %x)
      %d = div(%c, %p)
      output %d }""",
    "concat_dropout": """graph g { input %x: f32[1, 2, 3, 3]
      %c = concat(%x, %x, %x) {axis=1}
      %d = dropout(%c) {ratio=0.25}
      output %d }""",
    "batch_norm": """graph g { input %x: f32[2, 3, 4, 4]
      param %s: f32[3]
      param %b: f32[3]
      buffer %m: f32[3]
      buffer %v: f32[3]
      %y = batch_norm(%x, %s, %b, %m, %v) {epsilon=0.001}
      output %y }""",
    "clip_hard_sigmoid_erf": """graph g { input %x: f32[3, 7]
      %a = clip(%x) {min=-0.5, max=0.25}
      %b = clip(%x) {max=0.1}
      %c = hard_sigmoid(%x) {alpha=0.3, beta=0.4}
      %d = erf(%x)
      %e = add(%a, %b)
      %f = mul(%c, %d)
      %g = add(%e, %f)
      output %g }""",
    "lrn_reduce_mean": """graph g { input %x: f32[2, 5, 3, 4]
      %y = lrn(%x) {size=3, alpha=0.01, beta=0.75, bias=2.0}
      %m = reduce_mean(%y) {axes=[1, 3]}
      output %m }""",
    "reduce_mean_dropdims": """graph g { input %x: f32[2, 5, 3, 4]
      %n = reduce_mean(%x) {axes=[2, 3], keepdims=false}
      output %n }""",
    "scale_slice_rsqrt": """graph g { input %x: f32[2, 6, 3]
      %a = scale(%x) {factor=-1.5}
      %b = slice(%a) {axis=1, start=1, end=4}
      %c = mul(%b, %b)
      %r = rsqrt(%c) {epsilon=0.001}
      output %r }""",
}


def main():
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        return
    common.ensure_venv()
    import numpy as np
    import onnx
    import onnxruntime as ort

    args = sys.argv[1:]
    exe = common.arg(args, "--kiln", None)
    epochs = int(common.arg(args, "--epochs", "5"))
    if args:
        raise SystemExit(f"unknown arguments {args}; see --help")
    kiln = common.kiln_bin(exe)
    os.makedirs(WORK, exist_ok=True)
    rng = np.random.default_rng(0)

    def run(*cmd):
        r = subprocess.run([kiln, *cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"kiln {' '.join(cmd)} failed:\n{r.stderr}")
        return r.stdout

    def check(label, model, extra=(), batch=None):
        """Exports `model` (with `extra` weight options), checks the file, and compares
        `kiln run` on `model` with ONNX Runtime on the export. Returns the relative error."""
        path = os.path.join(WORK, f"{label}.onnx")
        opts = list(extra) + (["--batch", str(batch)] if batch else [])
        run("export", model, *opts, "-o", path)
        onnx.checker.check_model(path, full_check=True)
        m = onnx.load(path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds, cmd = {}, ["run", model, *opts]
        for i in m.graph.input:
            shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
            x = rng.standard_normal(shape).astype(np.float32)
            p = os.path.join(WORK, f"{label}_{i.name}.npy")
            np.save(p, x)
            feeds[i.name] = x
            cmd += ["--input", f"{i.name}={p}"]
        outs = [o.name for o in m.graph.output]
        for o in outs:
            cmd += ["--output", f"{o}={os.path.join(WORK, f'{label}_out_{o}.npy')}"]
        run(*cmd)
        want = sess.run(outs, feeds)
        abs_err, rel_err, scale, agree = 0.0, 0.0, 0.0, ""
        for o, w in zip(outs, want):
            got = np.load(os.path.join(WORK, f"{label}_out_{o}.npy"))
            assert got.shape == w.shape, f"{label} output {o}: kiln {got.shape}, ORT {w.shape}"
            a = float(np.max(np.abs(got - w))) if w.size else 0.0
            abs_err = max(abs_err, a)
            scale = max(scale, float(np.max(np.abs(w))) if w.size else 0.0)
            rel_err = max(rel_err, a / max(float(np.max(np.abs(w))), 1e-30) if w.size else 0.0)
            if w.ndim == 2 and w.shape[1] > 1:
                agree = f"{int(np.sum(got.argmax(1) == w.argmax(1)))}/{w.shape[0]} argmax"
        ok = "ok" if rel_err <= TOLERANCE else "FAIL"
        print(f"{label:<26} opset {m.opset_import[0].version:>2} {scale:10.3g} {abs_err:12.3e} {rel_err:12.3e}  {ok:4} {agree}")
        return rel_err

    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}; kiln run (JIT) vs ONNX Runtime on the export")
    print(f"{'model':<26} {'':8} {'max |ORT|':>10} {'max abs err':>12} {'max rel err':>12}")
    worst = 0.0

    # 1. the digits CNN, trained
    weights = os.path.join(WORK, "digits_cnn.safetensors")
    out = run("train", os.path.join(ROOT, "examples", "models", "digits_cnn.kiln"), "--data", "digits",
              "--epochs", str(epochs), "--seed", "1", "--save", weights, "--no-progress")
    acc = re.findall(r"test accuracy: ([\d.]+%)", out)
    print(f"(digits CNN trained {epochs} epochs, test accuracy {acc[-1] if acc else '?'})")
    worst = max(worst, check("digits_cnn_trained", os.path.join(ROOT, "examples", "models", "digits_cnn.kiln"),
                             ["--weights", weights], batch=16))

    # 2. every zoo model, seeded weights
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "models", "*.kiln"))):
        worst = max(worst, check(os.path.basename(path)[:-5], path))

    # 3. a graph per op kind
    for label, src in OPS.items():
        p = os.path.join(WORK, f"op_{label}.kiln")
        with open(p, "w") as f:
            f.write(src + "\n")
        worst = max(worst, check(label, p))

    print(f"worst relative error {worst:.3e} (tolerance {TOLERANCE:g})")
    if worst > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
