#!/usr/bin/env python3
"""One training step in kiln vs PyTorch eager, on the same weights and the same batch.

Networks: LeNet-5 (examples/models/lenet5.kiln) at batch 64 and ResNet-18
(examples/models/resnet18.kiln) at batch 8; cross-entropy on class ids, SGD (lr 0.05,
momentum 0.9: `kiln train`'s defaults). The PyTorch model is built from the same .kiln file by
the small text-IR reader below (Python, independent of kiln's Rust code): every node becomes
the torch.nn.functional call of the same definition, every param and buffer a tensor of the
same name, batch norm on the batch's statistics (training mode).

1. Weights: seeded random (conv/dense uniform(±√(6/fan_in)), bias uniform(±0.1), batch norm
   weight in [0.5, 1.5], bias N(0, 0.1), running mean N(0, 0.1), variance in [0.5, 1.5]),
   written as safetensors under the model's names; the batch: seeded N(0, 1) images and
   uniform class ids, as .npy.
2. Agreement: `kiln grad` (JIT) on that batch and those weights against PyTorch's first
   forward/backward: the loss (relative difference; pass: within 1e-4), and every gradient of
   kiln and of PyTorch in f32 against PyTorch in f64 (per tensor max |g − g64| / max |g64|, the
   worst tensor), which shows how far f32 rounding alone moves them.
3. Time per training step (forward, loss, backward, SGD update) at each thread count, after
   one warm-up step: `--clock wall`, the median of `--runs` steps; `--clock cpu`, CPU time,
   which the other jobs of a shared machine do not inflate (kiln's: the difference of the CPU
   time, from wait4, of a 1-step and a (1 + k)-step `kiln bench --train` process over k, so
   compilation and start-up cancel; PyTorch's: the process CPU time over its steps, about a
   second of them each); `--clock auto` (the default): CPU time at 1 thread and wall time at
   more (a process's CPU time sums its threads: work, not latency). kiln: `kiln bench MODEL
   --train --batch B --weights W`
   (seeded random images and class ids of its own; without `--train` in this build, `kiln
   train` on one fixed batch, 1-channel networks only), PyTorch eager with `torch.set_num_threads(T)` (and one
   inter-op thread); each in its own process pinned with the same `taskset -c`, alternating,
   `--rounds` times (the median of the rounds' medians).

Usage: python3 benches/train_vs_pytorch.py [--nets lenet5,resnet18] [--runs N] [--rounds R]
         [--threads 1,2] [--clock auto|cpu|wall] [--kiln PATH] [--seed S]
Without torch, numpy and safetensors in the running Python it makes a virtual environment under
/tmp (from PyPI) and reruns itself there.
"""

import math
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import onnx_vs_ort as common  # noqa: E402

ROOT = common.ROOT
VENV = "/tmp/kiln-torch-bench-venv"
WORK = "/tmp/kiln-train-bench"
NETS = {"lenet5": 64, "resnet18": 8}
LR, MOMENTUM = 0.05, 0.9


def ensure_venv():
    if os.environ.get("KILN_BENCH_IN_VENV") or common.have("torch", "numpy", "safetensors"):
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([py, "-m", "pip", "install", "-q", "torch", "numpy", "safetensors"])
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], dict(os.environ, KILN_BENCH_IN_VENV="1"))


def parse(path):
    """A .kiln file: (inputs {name: shape}, params [(name, shape, kind)], nodes [(name, op,
    ins, attrs, shape)], outputs [name])."""
    inputs, params, nodes, outputs = {}, [], [], []
    for line in open(path):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("graph") or s == "}":
            continue
        if m := common.DECL.match(line):
            kind, name, d = m.group(1), m.group(2), common.dims(m.group(3))
            if kind == "input":
                inputs[name] = d
            else:
                params.append((name, d, kind))
            continue
        if m := common.OUT.match(line):
            outputs.append(m.group(1))
            continue
        m = common.LINE.match(line)
        if not m:
            raise SystemExit(f"{path}: cannot read `{s}`")
        ins = [x.strip()[1:] for x in m.group(3).split(",")]
        nodes.append((m.group(1), m.group(2), ins, common.attrs(m.group(4)), common.dims(m.group(5))))
    return inputs, params, nodes, outputs


def with_batch(path, batch, out):
    """A copy of a .kiln file whose inputs and activations have dim 0 = batch (kiln grad has no
    --batch)."""
    text = []
    for line in open(path):
        if not re.match(r"^\s*(param|buffer) ", line):
            line = line.replace("f32[1,", f"f32[{batch},")
        text.append(line)
    open(out, "w").writelines(text)
    return out


def random_weights(params, nodes, rng):
    import numpy as np

    role = {}
    for name, op, ins, a, d in nodes:
        if op == "batch_norm":
            role.update({ins[1]: "bn_weight", ins[2]: "bn_bias", ins[3]: "mean", ins[4]: "var"})
    w = {}
    for name, d, kind in params:
        r = role.get(name)
        if r in ("bn_weight", "var"):
            v = rng.uniform(0.5, 1.5, d)
        elif r in ("bn_bias", "mean"):
            v = rng.normal(0, 0.1, d)
        elif len(d) > 1:
            b = math.sqrt(6 / int(np.prod(d[1:])))
            v = rng.uniform(-b, b, d)
        else:
            v = rng.uniform(-0.1, 0.1, d)
        w[name] = v.astype(np.float32)
    return w


class TorchNet:
    """The .kiln graph run with torch.nn.functional (training mode)."""

    def __init__(self, path, weights):
        import torch

        self.inputs, params, self.nodes, self.outputs = parse(path)
        self.t = {}
        for name, d, kind in params:
            self.t[name] = torch.tensor(weights[name], requires_grad=(kind == "param"))
        self.params = {n: self.t[n] for n, _, k in params if k == "param"}

    def forward(self, x):
        import torch
        import torch.nn.functional as F

        env = dict(self.t)
        env[next(iter(self.inputs))] = x
        for name, op, ins, a, d in self.nodes:
            v = [env[i] for i in ins]
            pad = a.get("padding", [0, 0, 0, 0])
            if op in ("conv2d", "max_pool2d", "avg_pool2d") and (pad[0] != pad[2] or pad[1] != pad[3]):
                raise SystemExit(f"{name}: asymmetric padding is not mapped in this script")
            if op == "conv2d":
                y = F.conv2d(v[0], v[1], v[2] if len(v) > 2 else None, stride=a.get("stride", [1, 1]),
                             padding=pad[:2], dilation=a.get("dilation", [1, 1]), groups=int(a.get("groups", 1)))
            elif op == "max_pool2d":
                y = F.max_pool2d(v[0], a["kernel"], a.get("stride", a["kernel"]), pad[:2])
            elif op == "relu":
                y = F.relu(v[0])
            elif op == "add":
                y = v[0] + v[1]
            elif op == "flatten":
                y = torch.flatten(v[0], 1)
            elif op == "dense":
                y = F.linear(v[0], v[1], v[2] if len(v) > 2 else None)
            elif op == "batch_norm":
                y = F.batch_norm(v[0], v[3], v[4], v[1], v[2], training=True, momentum=0.1,
                                 eps=float(a.get("epsilon", 1e-5)))
            elif op == "global_avg_pool":
                y = v[0].mean((2, 3), keepdim=True)
            else:
                raise SystemExit(f"{name}: no torch mapping for `{op}` in this script")
            env[name] = y
        return env[self.outputs[0]]


def files(net, batch, seed):
    """Weights (safetensors), batch (.npy) and the batch-sized .kiln copy of `net`."""
    import numpy as np
    from safetensors.numpy import save_file

    src = os.path.join(ROOT, "examples", "models", f"{net}.kiln")
    d = os.path.join(WORK, f"{net}_b{batch}_s{seed}")
    os.makedirs(d, exist_ok=True)
    inputs, params, nodes, outputs = parse(src)
    rng = np.random.default_rng(seed)
    w = random_weights(params, nodes, rng)
    save_file(w, os.path.join(d, "weights.safetensors"))
    shape = [batch] + next(iter(inputs.values()))[1:]
    x = rng.standard_normal(shape).astype(np.float32)
    classes = nodes[-1][4][-1]
    t = rng.integers(0, classes, batch).astype(np.int64)
    np.save(os.path.join(d, "x.npy"), x)
    np.save(os.path.join(d, "t.npy"), t)
    kb = with_batch(src, batch, os.path.join(d, f"{net}_b{batch}.kiln"))
    return dict(src=src, kiln_b=kb, dir=d, weights=os.path.join(d, "weights.safetensors"),
                x=os.path.join(d, "x.npy"), t=os.path.join(d, "t.npy"), input=next(iter(inputs)))


def torch_step(net, f):
    """One step: (loss, {name: grad}), the optimizer built on it."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors.numpy import load_file

    m = TorchNet(f["src"], load_file(f["weights"]))
    opt = torch.optim.SGD(list(m.params.values()), lr=LR, momentum=MOMENTUM)
    x = torch.from_numpy(np.load(f["x"]))
    t = torch.from_numpy(np.load(f["t"]))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m.forward(x), t)
        loss.backward()
        opt.step()
        return loss.item()

    return m, step


def torch_worker(argv):
    """`--torch-worker NET DIR THREADS RUNS CLOCK`: prints the ms of a training step: CLOCK
    `wall`, the median of RUNS steps; `cpu`, the process's CPU time over at least 3 steps and
    common.CPU_TARGET_S seconds, divided by the steps."""
    import numpy as np
    import torch

    net, d, threads, runs = argv[0], argv[1], int(argv[2]), int(argv[3])
    clock = argv[4] if len(argv) > 4 else "wall"
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    f = dict(src=os.path.join(ROOT, "examples", "models", f"{net}.kiln"),
             weights=os.path.join(d, "weights.safetensors"), x=os.path.join(d, "x.npy"), t=os.path.join(d, "t.npy"))
    _, step = torch_step(net, f)
    step()
    if clock == "cpu":
        n, t0 = 0, time.process_time()
        while n < 3 or time.process_time() - t0 < common.CPU_TARGET_S:
            step()
            n += 1
        print(f"torch: median {(time.process_time() - t0) / n * 1e3:.4f} ms")
        return
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t0) * 1e3)
    print(f"torch: median {float(np.median(ts)):.4f} ms")


def kiln_has_train_bench(kiln):
    h = subprocess.run([kiln, "bench", "--help"], capture_output=True, text=True).stdout
    return "--train" in h


def kiln_train_ms(kiln, f, batch, threads, runs, clock="wall"):
    """kiln's ms per step: `wall`, `kiln bench --train`'s median of `runs`; `cpu`, the
    difference of the CPU time of a 1-step and a (1 + k)-step process over k (k for about
    common.CPU_TARGET_S seconds of steps)."""
    if clock == "wall":
        return run_kiln_cpu(kiln, f, batch, threads, runs)[1]
    lo, median = run_kiln_cpu(kiln, f, batch, threads, 1)
    k = max(3, min(100_000, math.ceil(common.CPU_TARGET_S / max(median, 1e-3) * 1e3)))
    hi, _ = run_kiln_cpu(kiln, f, batch, threads, 1 + k)
    return (hi - lo) / k * 1e3


def run_kiln_cpu(kiln, f, batch, threads, runs):
    """As `run_kiln_train`, with the process's CPU seconds (wait4)."""
    cmd = ["taskset", "-c", common.cpus_for(threads), kiln, "bench", f["src"], "--train", "--loss", "cross-entropy",
           "--optimizer", "sgd", "--batch", str(batch), "--threads", str(threads), "--runs", str(runs),
           "--weights", f["weights"]]
    with tempfile.TemporaryFile(mode="w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)}: {err.read().strip()}")
    m = re.search(r"train step: median ([\d.]+) ms", out)
    if not m:
        raise RuntimeError(f"no `train step: median` in {out!r}")
    return ru.ru_utime + ru.ru_stime, float(m.group(1))


def kiln_fit_ms(kiln, f, batch, threads, runs):
    """Without `bench --train`: `kiln train` on a fixed batch, as an MNIST-style IDX file of
    batch·5/4 images (its 80/20 split leaves exactly one training batch), for 1 + runs epochs;
    each epoch's line gives images/s of its training step (the held-out evaluation is outside
    it), so a step is batch / (images/s), the median over epochs 2 to 1 + runs. Threads: the
    JIT's default, one per CPU that taskset leaves it. 1-channel inputs only."""
    import struct

    import numpy as np

    x = np.load(f["x"])
    if x.shape[1] != 1:
        raise RuntimeError("kiln train reads 1-channel image files only")
    n = batch * 5 // 4
    imgs, lbls = os.path.join(f["dir"], "idx-images"), os.path.join(f["dir"], "idx-labels")
    rng = np.random.default_rng(0)
    with open(imgs, "wb") as o:
        o.write(struct.pack(">IIII", 0x803, n, x.shape[2], x.shape[3]))
        o.write(rng.integers(0, 256, (n, x.shape[2], x.shape[3]), dtype=np.uint8).tobytes())
    with open(lbls, "wb") as o:
        o.write(struct.pack(">II", 0x801, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    cmd = ["taskset", "-c", common.cpus_for(threads), kiln, "train", f["src"], "--data", f"idx:{imgs},{lbls}",
           "--batch", str(batch), "--epochs", str(1 + runs), "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    ips = [float(v) for v in re.findall(r"epoch \d+/\d+: .* ([\d.]+) images/s", out)]
    return float(np.median([batch * 1e3 / v for v in ips[1:]]))


def torch_train_ms(net, f, threads, runs, clock="wall"):
    cmd = ["taskset", "-c", common.cpus_for(threads), sys.executable, os.path.abspath(__file__), "--torch-worker",
           net, f["dir"], str(threads), str(runs), clock]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, KILN_BENCH_IN_VENV="1"))
    if out.returncode != 0:
        raise RuntimeError(f"torch worker: {out.stderr.strip()[-2000:]}")
    return float(re.search(r"torch: median ([\d.]+) ms", out.stdout).group(1))


def agreement(kiln, net, f):
    """kiln grad vs torch's first step: kiln loss, torch loss, their relative difference, and the
    worst gradient error of kiln and of torch f32 against torch in f64 (per tensor: max |g −
    g64| / max |g64|) with the tensors where they occur."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors.numpy import load_file

    g_path = os.path.join(f["dir"], "kiln_grads.safetensors")
    cmd = [kiln, "grad", f["kiln_b"], "--input", f"{f['input']}={f['x']}", "--target", f["t"], "--loss",
           "cross-entropy", "--weights", f["weights"], "--output", g_path]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kiln grad: {out.stderr.strip()}")
    k_loss = float(re.search(r"loss: ([-\d.eE+naif]+)", out.stdout).group(1))
    m, step = torch_step(net, f)
    t_loss = step()  # the first step's gradients are still in .grad
    w64 = {k: v.astype(np.float64) for k, v in load_file(f["weights"]).items()}
    m64 = TorchNet(f["src"], w64)
    x64 = torch.from_numpy(np.load(f["x"]).astype(np.float64))
    F.cross_entropy(m64.forward(x64), torch.from_numpy(np.load(f["t"]))).backward()
    kg = load_file(g_path)
    worst = {"kiln": (0.0, None), "torch": (0.0, None)}
    for name, p in m64.params.items():
        ref = p.grad.numpy()
        scale = max(float(np.max(np.abs(ref))), 1e-30)
        for who, g in (("kiln", kg[name]), ("torch", m.params[name].grad.numpy())):
            err = float(np.max(np.abs(g.astype(np.float64) - ref))) / scale
            if err > worst[who][0]:
                worst[who] = (err, name)
    return k_loss, t_loss, abs(k_loss - t_loss) / abs(t_loss), worst


def main():
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-worker":
        torch_worker(sys.argv[2:])
        return
    ensure_venv()
    import numpy as np
    import torch

    args = sys.argv[1:]
    runs = int(common.arg(args, "--runs", "10"))
    rounds = int(common.arg(args, "--rounds", "3"))
    threads = common.parse_threads(common.arg(args, "--threads", "1,2"))
    nets = common.arg(args, "--nets", ",".join(NETS)).split(",")
    exe = common.arg(args, "--kiln", None)
    seed = int(common.arg(args, "--seed", "0"))
    clock = common.arg(args, "--clock", "auto")
    if clock not in ("auto", "cpu", "wall"):
        raise SystemExit(f"--clock {clock}: auto, cpu or wall")
    if args:
        raise SystemExit(f"unknown arguments {args}; see --help")
    kiln = common.kiln_bin(exe)
    timed = kiln_has_train_bench(kiln)
    fallback = not timed
    clocks = ", ".join(f"{t}t: {common.clock_for(clock, t)}" for t in threads)
    print(f"torch {torch.__version__}; SGD lr {LR} momentum {MOMENTUM}, cross-entropy; {runs} timed steps x "
          f"{rounds} rounds, median ms per step; clock {clocks}; kiln {kiln}; {common.load()}")
    if fallback:
        print("note: this kiln has no `bench --train`: kiln's step is timed by `kiln train` on one fixed batch "
              "(batch / the images/s it reports per epoch; 1 + runs epochs, the first left out), 1-channel inputs only")
    head = (f"{'network':<10} {'batch':>5} {'kiln loss':>10} {'torch loss':>10} {'loss rel':>9} {'kiln grad':>9} "
            f"{'f32 grad':>9} {'pass':>4}")
    for t in threads:
        head += f"  {'kiln ' + str(t) + 't':>9} {'torch ' + str(t) + 't':>9} {'ratio':>6}"
    print(head)
    ok, ratios = True, {t: [] for t in threads}
    for net in nets:
        batch = NETS[net]
        f = files(net, batch, seed)
        try:
            k_loss, t_loss, l_rel, worst = agreement(kiln, net, f)
            passed = l_rel <= 1e-4
            line = (f"{net:<10} {batch:>5} {k_loss:>10.5f} {t_loss:>10.5f} {l_rel:>9.1e} {worst['kiln'][0]:>9.1e} "
                    f"{worst['torch'][0]:>9.1e} {'yes' if passed else 'NO':>4}")
            where = f"worst gradient: kiln {worst['kiln'][1]}, torch f32 {worst['torch'][1]}"
        except Exception as e:
            passed, where = False, None
            line = f"{net:<10} {batch:>5} {'error: ' + str(e)}"
        ok &= passed
        per = {t: ([], []) for t in threads}
        for _ in range(rounds):
            for t in threads:
                ck = common.clock_for(clock, t)
                if timed:
                    per[t][0].append(kiln_train_ms(kiln, f, batch, t, runs, ck))
                elif fallback:
                    try:
                        per[t][0].append(kiln_fit_ms(kiln, f, batch, t, runs))
                    except Exception as e:
                        print(f"  [{net}: kiln not timed: {e}]", file=sys.stderr)
                per[t][1].append(torch_train_ms(net, f, t, runs, ck if timed else "wall"))
        for t in threads:
            tm = float(np.median(per[t][1]))
            if per[t][0]:
                km = float(np.median(per[t][0]))
                ratios[t].append(km / tm)
                line += f"  {common.fmt_ms(km):>9} {common.fmt_ms(tm):>9} {km / tm:>6.2f}"
            else:
                line += f"  {'—':>9} {common.fmt_ms(tm):>9} {'—':>6}"
        print(line + (f"   ({where})" if where else ""), flush=True)
    if any(ratios.values()):
        line = f"{'geomean':<10} {'':>5} {'':>10} {'':>10} {'':>9} {'':>9} {'':>9} {'':>4}"
        for t in threads:
            line += f"  {'':>9} {'':>9} {common.geomean(ratios[t]):>6.2f}"
        print(line)
    print("loss rel: |kiln − torch| / |torch| of the first loss (pass: ≤ 1e-4); kiln grad / f32 grad: the first "
          "step's gradients of `kiln grad` / of torch in f32 against torch in f64, max over tensors of "
          "max |g − g64| / max |g64|; ratio: kiln / torch per step (> 1: kiln slower)")
    print(f"end: {common.load()}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
