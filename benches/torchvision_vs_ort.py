#!/usr/bin/env python3
"""kiln vs ONNX Runtime on torchvision's classification networks, exported as PyTorch users
export them today.

For each network (`--models` picks some; names as torchvision's builders):
  1. builds it with random weights (`torch.manual_seed(seed)`, torchvision's own
     initialization) and randomizes every BatchNorm so it is not an identity: weight uniform in
     [0.5, 1.5], bias N(0, 0.1), running statistics measured on a seeded random batch (train
     mode, cumulative average) and then perturbed (mean += 0.2·σ·N(0, 1), variance ×
     e^U(−0.5, 0.5)), which keeps the activations at a sane scale through deep networks;
  2. exports it in eval mode with `torch.onnx.export(model, (x,), path)` and nothing else: the
     default (torch.export-based) exporter at its default opset, weights in the external
     `NAME.onnx.data` file it writes; static input 1x3x224x224 (Inception v3: 299x299). Exports
     are cached under /tmp/kiln-tv-bench/ (keyed by torch version, seed and opset; `--refresh`
     re-exports);
  3. measures the file with benches/onnx_vs_ort.py's `measure`: `kiln check`; `kiln run` (JIT;
     inputs and outputs by the file's own names) and ORT on the same seeded N(0, 1) input ->
     max abs / max rel error (rel = max |kiln − ORT| / max |ORT|, the output's scale; pass:
     ≤ 1e-4); time per run of `kiln bench --engine jit --threads T` vs an ORT session with
     `intra_op_num_threads = T`, each in its own process pinned with the same `taskset -c`,
     kiln and ORT alternating (`--rounds` times; the median of the rounds; `--tier
     avx2,cranelift` times kiln with each `--gemm-tier`; `--clock auto|cpu|wall` as in
     onnx_vs_ort.py: by default CPU time at 1 thread, wall time at more);
  4. prints the table, the ratios kiln/ORT with their geometric means and the worst ones,
     kiln's fraction of the FMA peak, and every network kiln cannot import with kiln's own
     error (and the operators it names).
The machine, the kiln build, the pinning and the FMA peak measured in the same run are
printed first, as by benches/onnx_vs_ort.py (whose docstring says how).

Usage: python3 benches/torchvision_vs_ort.py [--models resnet18,alexnet] [--runs N] [--rounds R]
         [--threads 1,2] [--tier auto,avx2,cranelift] [--clock auto|cpu|wall] [--kiln PATH] [--seed S] [--opset N] [--refresh]
Without torch, torchvision, onnx, onnxscript and onnxruntime in the running Python it reruns
itself in the virtual environment $KILN_BENCH_VENV (default /tmp/kiln-bench-venv, shared with
onnx_vs_ort.py; made and filled from PyPI when needed — torch is large).
"""

import contextlib
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import onnx_vs_ort as common  # noqa: E402

WORK = "/tmp/kiln-tv-bench"
MODELS = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
          "efficientnet_b0", "shufflenet_v2_x1_0", "squeezenet1_1", "densenet121", "googlenet", "inception_v3",
          "regnet_y_400mf", "convnext_tiny", "alexnet", "vgg11_bn", "mnasnet0_5"]
BUILD_KW = {"googlenet": {"init_weights": True}, "inception_v3": {"init_weights": True}}


def randomize_batch_norms(model, gen, size):
    """Every BatchNorm: random affine, running statistics measured on a random batch, then
    perturbed (see the docstring)."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0, 0.1, generator=gen)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
        model.train()
        model(torch.randn(4, 3, size, size, generator=gen))
        for m in bns:
            std = m.running_var.sqrt()
            m.running_mean += 0.2 * std * torch.randn(m.running_mean.shape, generator=gen)
            m.running_var *= torch.exp(torch.empty(m.running_var.shape).uniform_(-0.5, 0.5, generator=gen))
            m.momentum = 0.1
    model.eval()
    return len(bns)


def export(name, seed, opset, refresh):
    """The cached .onnx of `name`, exported if needed; (path, None) or (None, error)."""
    import torch
    import torchvision

    size = 299 if name == "inception_v3" else 224
    tag = f"{name}-s{seed}-o{opset or 'default'}-torch{torch.__version__}".replace("+", "_")
    d = os.path.join(WORK, tag)
    path = os.path.join(d, f"{name}.onnx")
    if os.path.exists(path) and not refresh:
        return path, None
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None, **BUILD_KW.get(name, {})).eval()
    randomize_batch_norms(model, gen, size)
    x = torch.randn(1, 3, size, size, generator=gen)
    log = io.StringIO()
    kw = {"opset_version": opset} if opset else {}
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            torch.onnx.export(model, (x,), path, **kw)
    except Exception as e:
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        return None, f"torch.onnx.export: {type(e).__name__}: {str(e)[:2000]}\n{log.getvalue()[-2000:]}"
    return path, None


def main():
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        return
    mods = ("numpy", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime")
    common.ensure_venv(mods, mods)
    import onnx
    import torch
    import torchvision

    args = sys.argv[1:]
    refresh = "--refresh" in args
    if refresh:
        args.remove("--refresh")
    runs = int(common.arg(args, "--runs", "10"))
    rounds = int(common.arg(args, "--rounds", "3"))
    threads = common.parse_threads(common.arg(args, "--threads", "1,2"))
    models = common.arg(args, "--models", ",".join(MODELS)).split(",")
    exe = common.arg(args, "--kiln", None)
    tiers = common.parse_tiers(common.arg(args, "--tier", None))
    clock = common.arg(args, "--clock", "auto")
    if clock not in ("auto", "cpu", "wall"):
        raise SystemExit("--clock is auto, cpu or wall")
    seed = int(common.arg(args, "--seed", "0"))
    opset = common.arg(args, "--opset", None)
    opset = int(opset) if opset else None
    if args:
        raise SystemExit(f"unknown arguments {args}; see --help")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"note: {unknown} are not in the default list; trying torchvision.models.get_model", file=sys.stderr)
    kiln = common.kiln_bin(exe)
    os.makedirs(WORK, exist_ok=True)
    widest = common.header(kiln, threads, tiers, clock)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {common.versions()}; "
          f"{runs} timed runs x {rounds} rounds, median ms", flush=True)
    rows = []
    for name in models:
        path, err = export(name, seed, opset, refresh)
        if err:
            rows.append(dict(name=name, imports=False, error=err, abs=None, rel=None, times={}, flops=None, opset="—"))
            continue
        m = onnx.load(path, load_external_data=False)
        op = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), "?")
        r = common.measure(kiln, name, path, os.path.dirname(path), seed, runs, rounds, threads, {"opset": op},
                           tiers, clock)
        rows.append(r)
        common.progress(r, tiers)
    widest = common.footer(widest)
    print()
    ok = common.print_table(rows, threads, extra_cols=[("opset", 5)], tiers=tiers, peak_gflops=widest, clock=clock)
    print(f"\nrel err: max |kiln − ORT| / max |ORT| over the output, pass: ≤ {common.REL_TOL:g}; "
          "ratio: kiln / ORT time per run (> 1: kiln slower); geomean over the timed networks; %peak: "
          "kiln's GFLOP/s (`kiln summary`'s FLOPs / median) over T cores' widest FMA peak")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
