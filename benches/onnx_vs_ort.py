#!/usr/bin/env python3
"""kiln vs ONNX Runtime on the same ONNX files.

Three sets of networks (all by default, none when ONNX files are given; `--sets
zoo,speed,light` picks some):

  zoo    the zoo networks (LeNet-5, AlexNet, VGG-16, ResNet-18, the MobileNet block), each
         read from examples/models/NET.kiln by the small text-IR reader below (Python,
         independent of kiln's Rust code) and written with onnx.helper, so the ONNX file and
         the .kiln zoo describe the same network; `kiln summary` must print the same totals on
         both (the `summary` column);
  speed  the networks of the speed table in docs/performance.md, built with onnx.helper:
         LeNet-5 at batch 1 (= zoo `lenet5`) and 64, a VGG block (2x conv 3x3 64->64 pad 1 +
         ReLU, max pool 2, on 1x64x56x56), ResNet-18 at batch 1 (= zoo `resnet18`), a
         MobileNet block (depthwise 3x3 pad 1 on 1x32x112x112 + ReLU, pointwise 32->64 +
         ReLU) and a dilated conv (3x3, dilation 2, pad 2, 32->32 on 1x32x64x64 + ReLU);
  light  the nine real networks the onnx package ships (onnx/backend/test/data/light/
         light_*.onnx: AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet,
         SqueezeNet, VGG-19, ZFNet-512), every float constant (their weights are ConstantOfShape
         fills of 0.02, plus a few initializers) replaced by a seeded random tensor of its shape
         (He-normal for conv/dense weights; scales and batch norm variances in [0.5, 1.5],
         means N(0, 0.1); other tensors in [-0.1, 0.1]), and the logits (the final Softmax's
         input) added as a second graph output, since the probabilities saturate to 0 and 1.

and any ONNX file given on the command line (with its own weights).

It first prints the machine (lscpu's model, family and model, whether the CPU has FMA, AVX2
and AVX-512F, caches), the kiln binary and the commit it was built from, the CPUs each thread
count is pinned to, and the FMA peak of one core measured now by the loops of
benches/common/peak.rs (compiled with rustc; 128-bit, 256-bit and, on AVX-512 hosts only,
512-bit; the widest the CPU runs is "the peak"), again at the end.

For each model: `kiln check`; then `kiln run` (JIT, release binary, every input and output by
the file's own name) and ONNX Runtime on the same seeded inputs -> max abs / max rel error (rel =
max |kiln - ORT| / max |ORT|, per output, the worst output; pass = rel <= 1e-4); then the
time per run of `kiln bench --engine jit --threads T` (with `--gemm-tier X` for each tier of
`--tier`) and of an ORT session with `intra_op_num_threads = T` (inter-op 1), each in its own
process pinned with the same `taskset -c` (T = 1: the last CPU; T = 2: the last two), kiln and
ORT alternating, `--rounds` times each (each time is the median of the rounds'; the ratio
kiln/ORT is the median of the rounds' ratios, each of a kiln time and the ORT time measured
right after it, so that a slow spell of a shared machine weighs on both sides). `--clock
cpu` times CPU time, which the other jobs of a shared machine do not inflate: kiln's is the
difference of the CPU time (wait4) of a 1-run (the lesser of two) and a (1 + k)-run `kiln
bench` process over k (compilation and start-up cancel), ORT's the process CPU time over its
runs, each engine running about a second; `--clock wall` the medians of `--runs` runs;
`--clock auto` (the default) CPU time at 1 thread and wall time at more (a process's CPU time
sums its threads: work, not latency).
Prints the ratios kiln/ORT, kiln's fraction of the FMA peak of T cores (FLOPs as `kiln
summary` counts them), the geometric means of the ratios and the worst ones. Models kiln
cannot import are listed with kiln's error.

Usage: python3 benches/onnx_vs_ort.py [--runs N] [--rounds R] [--threads 1,2]
         [--sets zoo,speed,light] [--nets lenet5,light_resnet50] [--tier auto,avx2,cranelift]
         [--clock auto|cpu|wall]
         [--kiln PATH] [--seed S] [FILE.onnx ...]
Without --kiln it runs `cargo build --release -p kiln` (a no-op when up to date) and times a
copy of the binary under /tmp/kiln-onnx-bench/. Without numpy/onnx/onnxruntime in the running
Python it reruns itself in the virtual environment $KILN_BENCH_VENV (default
/tmp/kiln-bench-venv, made and filled from PyPI when needed); so
`/path/to/venv/bin/python benches/onnx_vs_ort.py` uses an existing one. Needs taskset and
rustc. benches/torchvision_vs_ort.py uses the measuring half of this file.
"""

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("KILN_BENCH_VENV", "/tmp/kiln-bench-venv")
WORK = "/tmp/kiln-onnx-bench"
NETS = ["lenet5", "alexnet", "vgg16", "resnet18", "mobilenet_block"]
SPEED = ["lenet5", "lenet5_b64", "vgg_block", "resnet18", "mobilenet_dw_pw", "dilated_conv"]
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
         "squeezenet", "vgg19", "zfnet512"]
REL_TOL = 1e-4


def have(*mods):
    try:
        for m in mods:
            __import__(m)
        return True
    except ImportError:
        return False


def ensure_venv(mods=("numpy", "onnx", "onnxruntime"), pkgs=("numpy", "onnx", "onnxruntime")):
    """Reruns the running script in a Python that has `mods`: this one if it has them, else
    the virtual environment `$KILN_BENCH_VENV` (default /tmp/kiln-bench-venv, shared by the
    bench scripts), made if missing and given whatever of `pkgs` it lacks from PyPI (pip)."""
    missing = [m for m in mods if not have(m)]
    if not missing:
        return
    if os.environ.get("KILN_BENCH_IN_VENV"):
        raise SystemExit(f"{sys.executable} lacks {missing} even after `pip install {' '.join(pkgs)}`; "
                         "run this script with a Python that has them, or set KILN_BENCH_VENV to a new directory")
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        print(f"[{', '.join(missing)} missing from {sys.executable}: making a virtual environment in {VENV}]",
              file=sys.stderr, flush=True)
        r = subprocess.run([sys.executable, "-m", "venv", VENV])
        if r.returncode != 0:
            raise SystemExit(f"`{sys.executable} -m venv {VENV}` failed (on Debian/Ubuntu: apt-get install "
                             f"python3-venv), or run this script with a Python that has {list(mods)}")
    if subprocess.run([py, "-c", "import " + ", ".join(mods)], capture_output=True).returncode != 0:
        print(f"[installing {' '.join(pkgs)} into {VENV}]", file=sys.stderr, flush=True)
        subprocess.check_call([py, "-m", "pip", "install", "-q", *pkgs])
    script = os.path.abspath(sys.argv[0])
    os.execve(py, [py, script] + sys.argv[1:], dict(os.environ, KILN_BENCH_IN_VENV="1"))


# ---------------------------------------------------------------------------------------------
# Building the models
# ---------------------------------------------------------------------------------------------

LINE = re.compile(r"^\s*%(\S+) = (\w+)\(([^)]*)\)(?: \{(.*)\})?: f32\[([\d, ]*)\]\s*$")
DECL = re.compile(r"^\s*(input|param|buffer) %(\S+): f32\[([\d, ]*)\]\s*$")
OUT = re.compile(r"^\s*output %(\S+)\s*$")


def dims(s):
    return [int(d) for d in s.split(",") if d.strip()]


def attrs(s):
    out = {}
    for m in re.finditer(r"(\w+)=(\[[^\]]*\]|[^,\s]+)", s or ""):
        k, v = m.group(1), m.group(2)
        out[k] = dims(v[1:-1]) if v.startswith("[") else v
    return out


def kiln_to_onnx(path, rng, batch=None):
    """The graph of a .kiln file as an ONNX model with random weights (opset 13); `batch` sets
    dim 0 of its input and output."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def b(d):
        return [batch] + d[1:] if batch else d

    nodes, inits, inputs, outputs, shape, params, role = [], [], [], [], {}, [], {}
    for line in open(path):
        if line.startswith("#") or not line.strip() or line.startswith("graph") or line.strip() == "}":
            continue
        if m := DECL.match(line):
            kind, name, d = m.group(1), m.group(2), dims(m.group(3))
            shape[name] = d
            if kind == "input":
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, b(d)))
                continue
            params.append(name)
            continue
        if m := OUT.match(line):
            outputs.append(helper.make_tensor_value_info(m.group(1), TensorProto.FLOAT, b(shape[m.group(1)])))
            continue
        m = LINE.match(line)
        if not m:
            raise SystemExit(f"{path}: cannot read `{line.strip()}`")
        name, op, args, a, d = m.group(1), m.group(2), m.group(3), attrs(m.group(4)), dims(m.group(5))
        shape[name] = d
        ins = [x.strip()[1:] for x in args.split(",")]
        x = ins[0]
        if op == "conv2d":
            w = shape[ins[1]]
            nodes.append(helper.make_node("Conv", ins, [name], name=name, kernel_shape=w[2:],
                                          strides=a.get("stride", [1, 1]), pads=a.get("padding", [0, 0, 0, 0]),
                                          dilations=a.get("dilation", [1, 1]), group=int(a.get("groups", 1))))
        elif op in ("max_pool2d", "avg_pool2d"):
            kw = dict(kernel_shape=a["kernel"], strides=a.get("stride", a["kernel"]), pads=a.get("padding", [0, 0, 0, 0]))
            if op == "avg_pool2d":
                kw["count_include_pad"] = 1 if a.get("count_include_pad") == "true" else 0
            nodes.append(helper.make_node("MaxPool" if op == "max_pool2d" else "AveragePool", [x], [name], name=name, **kw))
        elif op == "adaptive_avg_pool2d":
            # as PyTorch exports AdaptiveAvgPool2d when the input divides evenly
            h, w = shape[x][2:]
            oh, ow = a["output"]
            assert h % oh == 0 and w % ow == 0, f"{name}: uneven adaptive pool"
            k = [h // oh, w // ow]
            nodes.append(helper.make_node("AveragePool", [x], [name], name=name, kernel_shape=k, strides=k))
        elif op == "global_avg_pool":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [name], name=name))
        elif op == "relu":
            nodes.append(helper.make_node("Relu", [x], [name], name=name))
        elif op == "add":
            nodes.append(helper.make_node("Add", ins, [name], name=name))
        elif op == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [name], name=name, axis=1))
        elif op == "dense":
            nodes.append(helper.make_node("Gemm", ins, [name], name=name, transB=1))
        elif op == "dropout":
            nodes.append(helper.make_node("Dropout", [x], [name], name=name))
        elif op == "batch_norm":
            role.update({ins[1]: "scale", ins[3]: "mean", ins[4]: "var"})
            nodes.append(helper.make_node("BatchNormalization", ins, [name], name=name, epsilon=float(a.get("epsilon", 1e-5))))
        elif op == "concat":
            nodes.append(helper.make_node("Concat", ins, [name], name=name, axis=int(a.get("axis", 1))))
        else:
            raise SystemExit(f"{path}: no ONNX mapping for `{op}` in this script")
    for name in params:
        d = shape[name]
        r = role.get(name)
        if r == "var" or r == "scale":
            v = rng.uniform(0.5, 1.5, d)
        elif r == "mean":
            v = rng.normal(0, 0.1, d)
        else:
            fan_in = int(np.prod(d[1:])) if len(d) > 1 else d[0]
            v = rng.uniform(-1, 1, d) / np.sqrt(fan_in)
        inits.append(numpy_helper.from_array(v.astype(np.float32), name))
    graph = helper.make_graph(nodes, os.path.basename(path)[:-5], inputs, outputs, inits)
    return finish(graph)


def finish(graph, opset=13):
    from onnx import checker, helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="kiln-bench")
    model.ir_version = 8
    checker.check_model(model)
    return model


class Builder:
    """A chain of ONNX nodes with uniform(-1, 1)/sqrt(fan_in) weights."""

    def __init__(self, rng, shape):
        from onnx import TensorProto, helper

        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0
        self.inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)]
        self.x, self.c = "input", shape[1]

    def _name(self, op):
        self.n += 1
        return f"{op}{self.n}"

    def _param(self, name, shape, fan_in):
        import numpy as np
        from onnx import numpy_helper

        v = self.rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
        self.inits.append(numpy_helper.from_array(v.astype(np.float32), name))
        return name

    def node(self, op, **kw):
        from onnx import helper

        y = self._name(op.lower())
        self.nodes.append(helper.make_node(op, [self.x], [y], name=y, **kw))
        self.x = y
        return self

    def conv(self, cout, k, pad=0, dilation=1, group=1):
        from onnx import helper

        y = self._name("conv")
        fan_in = self.c // group * k * k
        w = self._param(f"{y}.weight", [cout, self.c // group, k, k], fan_in)
        bias = self._param(f"{y}.bias", [cout], fan_in)
        self.nodes.append(helper.make_node("Conv", [self.x, w, bias], [y], name=y, kernel_shape=[k, k],
                                           pads=[pad] * 4, dilations=[dilation] * 2, group=group))
        self.x, self.c = y, cout
        return self

    def relu(self):
        return self.node("Relu")

    def graph(self, name, out_shape):
        from onnx import TensorProto, helper

        out = [helper.make_tensor_value_info(self.x, TensorProto.FLOAT, out_shape)]
        return finish(helper.make_graph(self.nodes, name, self.inputs, out, self.inits))


def speed_model(name, rng):
    """The speed-table networks that are not zoo files as they stand."""
    if name == "lenet5_b64":
        return kiln_to_onnx(os.path.join(ROOT, "examples", "models", "lenet5.kiln"), rng, batch=64)
    if name == "vgg_block":
        b = Builder(rng, [1, 64, 56, 56]).conv(64, 3, pad=1).relu().conv(64, 3, pad=1).relu()
        return b.node("MaxPool", kernel_shape=[2, 2], strides=[2, 2]).graph(name, [1, 64, 28, 28])
    if name == "mobilenet_dw_pw":
        b = Builder(rng, [1, 32, 112, 112]).conv(32, 3, pad=1, group=32).relu().conv(64, 1).relu()
        return b.graph(name, [1, 64, 112, 112])
    if name == "dilated_conv":
        return Builder(rng, [1, 32, 64, 64]).conv(32, 3, pad=2, dilation=2).relu().graph(name, [1, 32, 64, 64])
    raise SystemExit(f"unknown speed network `{name}`")


def randomize_weights(model, rng):
    """Replaces every float constant of `model` — initializers, `Constant` values and the
    `ConstantOfShape` fills that stand for the weights in the onnx package's light models — by
    a seeded random tensor of its shape, in place: He-normal for conv/dense weights, batch norm
    (and Mul) scales and batch norm variances uniform in [0.5, 1.5], means N(0, 0.1), other
    tensors uniform in [-0.1, 0.1]."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    role = {}
    for n in g.node:
        if n.op_type == "BatchNormalization":
            for i, r in zip(n.input[1:], ["scale", "bias", "mean", "var"]):
                role[i] = r
        elif n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1:
            role[n.input[1]] = "conv_weight"
        elif n.op_type == "Gemm" and len(n.input) > 1:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            role[n.input[1]] = "dense_weight_t" if trans_b else "dense_weight"
        elif n.op_type == "MatMul" and len(n.input) > 1:
            role[n.input[1]] = "dense_weight"
        elif n.op_type == "Mul":
            for i in n.input:  # a scale, possibly unsqueezed first
                p = producer.get(i)
                role.setdefault(p.input[0] if p is not None and p.op_type in ("Unsqueeze", "Reshape") else i, "scale")

    def draw(name, shape):
        r = role.get(name)
        if r in ("scale", "var"):
            return rng.uniform(0.5, 1.5, shape)
        if r == "mean":
            return rng.normal(0, 0.1, shape)
        if r in ("conv_weight", "dense_weight_t") and len(shape) > 1:
            return rng.normal(0, math.sqrt(2 / int(np.prod(shape[1:]))), shape)
        if r == "dense_weight" and len(shape) == 2:
            return rng.normal(0, math.sqrt(2 / shape[0]), shape)
        return rng.uniform(-0.1, 0.1, shape)

    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
    inits = {t.name: t for t in g.initializer}
    for t in g.initializer:
        if t.data_type in floats:
            dt = numpy_helper.to_array(t).dtype
            t.CopyFrom(numpy_helper.from_array(draw(t.name, list(t.dims)).astype(dt), t.name))
    keep, used_shapes = [], set()
    for n in g.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None)
        if n.op_type == "Constant" and value is not None and value.data_type in floats and len(value.dims) > 0:
            dt = numpy_helper.to_array(value).dtype
            value.CopyFrom(numpy_helper.from_array(draw(n.output[0], list(value.dims)).astype(dt), value.name))
        elif (n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits
              and (value is None or value.data_type in floats)):
            shape = [int(d) for d in numpy_helper.to_array(inits[n.input[0]])]
            g.initializer.append(numpy_helper.from_array(draw(n.output[0], shape).astype(np.float32), n.output[0]))
            used_shapes.add(n.input[0])
            continue
        keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    still_read = {i for n in g.node for i in n.input}
    dead = [t for t in g.initializer if t.name in used_shapes and t.name not in still_read]
    for t in dead:
        g.initializer.remove(t)
    for i in [i for i in g.input if i.name in {t.name for t in dead}]:
        g.input.remove(i)
    return model


def expose_logits(model):
    """Adds the input of each graph output's Softmax as an extra graph output, so the
    comparison sees the logits too (random weights saturate the probabilities to 0 and 1, which
    would agree whatever the logits)."""
    from onnx import TensorProto, helper, shape_inference

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    known = {v.name: v for v in shape_inference.infer_shapes(model).graph.value_info}
    for o in list(g.output):
        n = producer.get(o.name)
        if n is not None and n.op_type == "Softmax" and n.input[0] not in {x.name for x in g.output}:
            v = known.get(n.input[0]) or helper.make_tensor_value_info(n.input[0], TensorProto.FLOAT, None)
            g.output.append(v)
    return model


def light_dir():
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


# ---------------------------------------------------------------------------------------------
# Measuring (shared with torchvision_vs_ort.py)
# ---------------------------------------------------------------------------------------------

def git_commit():
    """The repository's HEAD (short hash, `-dirty` with uncommitted changes to tracked files),
    or None outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=7", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def kiln_bin(exe=None):
    """`exe`, or the release kiln of this checkout: built (`cargo build --release -p kiln`, a
    no-op when up to date) and copied to the work folder, so a rebuild during the run (another
    cargo command in the same target/) cannot swap the binary between measurements."""
    if exe:
        return os.path.abspath(exe)
    r = subprocess.run(["cargo", "build", "--release", "-p", "kiln"], cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit("`cargo build --release -p kiln` failed (see above); or pass --kiln PATH")
    built = os.path.join(ROOT, "target", "release", "kiln")
    os.makedirs(WORK, exist_ok=True)
    snap = os.path.join(WORK, f"kiln-{git_commit() or 'build'}")
    shutil.copy2(built, snap + ".tmp")
    os.replace(snap + ".tmp", snap)
    return snap


def allowed_cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def cpus_for(threads):
    """The CPUs a run of `threads` threads is pinned to (both engines alike): the last
    `threads` of those this process may use."""
    cpus = allowed_cpus()
    if threads > len(cpus):
        raise SystemExit(f"{threads} threads asked, but this process may run on {len(cpus)} CPUs ({cpus})")
    return ",".join(str(c) for c in cpus[-threads:])


def check_taskset():
    if not shutil.which("taskset"):
        raise SystemExit("`taskset` (util-linux) is needed to pin kiln and ONNX Runtime to the same CPUs")


def machine():
    """One line naming the CPU (lscpu, else /proc/cpuinfo), the vector flags the kernel tiers
    depend on, the caches and the CPUs this process may use."""
    info = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    if "Flags" not in info and os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            key = {"model name": "Model name", "flags": "Flags", "cpu family": "CPU family",
                   "model": "Model"}.get(k.strip())
            if key:
                info.setdefault(key, v.strip())
    flags = set(info.get("Flags", "").split())
    have_flags = ", ".join(f"{f} {'yes' if f in flags else 'NO'}" for f in ("fma", "avx2", "avx512f"))
    caches = ", ".join(f"{c} {info[c + ' cache']}" for c in ("L1d", "L2", "L3") if c + " cache" in info)
    hyp = f", {info['Hypervisor vendor']} guest" if "Hypervisor vendor" in info else ""
    return (f"machine: {info.get('Model name', '?')} (family {info.get('CPU family', '?')} model "
            f"{info.get('Model', '?')}), {info.get('CPU(s)', os.cpu_count())} CPUs, "
            f"{info.get('Thread(s) per core', '?')} thread(s) per core{hyp}; {have_flags}; {caches}; "
            f"this process may use CPUs {allowed_cpus()}; Linux {os.uname().release}")


PEAK_LINE = re.compile(r"FMA peak, (\d+)-bit (\w+): ([\d.]+) GFLOP/s per core( \(widest on this CPU\))?")


def peak(cpu):
    """The FMA peak of core `cpu`, measured now by benches/common/peak.rs's loops (the Rust
    benches' own, compiled with rustc): (report lines, GFLOP/s of the widest width the CPU
    runs). (text, None) when rustc is missing or fails: the comparison goes on without it."""
    src = os.path.join(ROOT, "benches", "common", "peak_cli.rs")
    exe = os.path.join(WORK, "kiln-peak")
    os.makedirs(WORK, exist_ok=True)
    r = subprocess.run(["rustc", "--edition", "2024", "-O", src, "-o", exe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"FMA peak: not measured (rustc {src}: {r.stderr.strip()[-500:]})", None
    out = subprocess.run(["taskset", "-c", str(cpu), exe], capture_output=True, text=True).stdout
    widest = next((float(m.group(3)) for m in PEAK_LINE.finditer(out) if m.group(4)), None)
    return out.strip(), widest


def header(kiln, threads, tiers, clock="auto"):
    """The lines every comparison starts with: machine, kiln build, pinning, load, peak.
    Returns the widest FMA peak per core (None if not measured)."""
    check_taskset()
    print(machine())
    built = os.path.dirname(kiln) == WORK and os.path.basename(kiln).startswith("kiln-")
    print(f"kiln: {kiln} ({f'built from {ROOT} at ' + (git_commit() or '?') if built else 'given with --kiln'}); tiers: "
          f"{', '.join(t or 'auto (the default)' for t in tiers)}")
    print("pinned with taskset, kiln and ORT alike: "
          + ", ".join(f"{t} thread{'s' if t > 1 else ''} -> CPUs {cpus_for(t)}" for t in threads))
    print("clock: " + ", ".join(f"{t} thread{'s' if t > 1 else ''}: {clock_for(clock, t)} time" for t in threads)
          + " (cpu: CPU time of the process, what a shared machine's load does not inflate; wall: medians)")
    text, widest = peak(cpus_for(1))
    print(f"{text}\n(measured on CPU {cpus_for(1)} at the start; {load()})", flush=True)
    return widest


def footer(widest):
    """The peak measured again at the end (the host's clock moves); the best of both."""
    text, again = peak(cpus_for(1))
    print(f"\nat the end: {text}\n({load()})")
    return max(x for x in (widest, again, 0.0) if x is not None) or None


def totals(text):
    return [l.strip() for l in text.splitlines() if l.strip().startswith("Total ")]


def total_flops(text):
    m = re.search(r"^Total FLOPs: (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def io_names(path):
    """The file's graph inputs (without initializers), with static shapes (symbolic -> 1),
    and its outputs."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    ins = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim]
        ins.append((i.name, shape))
    return ins, [o.name for o in m.graph.output]


def safe(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def make_inputs(path, workdir, seed):
    """Seeded N(0, 1) inputs for the file, saved as .npy; [(name, path, array)]."""
    import numpy as np

    ins, _ = io_names(path)
    rng = np.random.default_rng(seed)
    out = []
    for name, shape in ins:
        x = rng.standard_normal(shape).astype(np.float32)
        p = os.path.join(workdir, f"in_{safe(name)}.npy")
        np.save(p, x)
        out.append((name, p, x))
    return out


def ort_session(path, threads):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


# CPU-clock measurements run each engine for about this much time, so process start-up and
# the clock's granularity are small beside it.
CPU_TARGET_S = 1.0
# warm-up of each timed process, kiln's (`kiln bench`) and ONNX Runtime's alike
WARM_UP_S = 0.1


def clock_for(clock, threads):
    """`--clock auto`: CPU time at 1 thread, wall time at more (a process's CPU time sums its
    threads, which is work, not latency)."""
    return ("cpu" if threads == 1 else "wall") if clock == "auto" else clock


def ort_worker(argv):
    """`--ort-worker MODEL THREADS RUNS CLOCK NAME=X.npy ...`: prints ORT's time per run in ms
    after warm-up runs for WARM_UP_S (one at least; as `kiln bench`: a new process's threads may
    share one CPU for its first milliseconds): CLOCK `wall`, the median of RUNS runs; `cpu`, the process's CPU time
    over at least 3 runs and CPU_TARGET_S seconds, divided by the runs."""
    import numpy as np

    path, threads, runs, clock = argv[0], int(argv[1]), int(argv[2]), argv[3]
    feed = {}
    for a in argv[4:]:
        k, v = a.rsplit("=", 1)
        feed[k] = np.load(v)
    s = ort_session(path, threads)
    t_warm = time.perf_counter()
    s.run(None, feed)
    while time.perf_counter() - t_warm < WARM_UP_S:
        s.run(None, feed)
    if clock == "cpu":
        n, t0 = 0, time.process_time()
        while n < 3 or time.process_time() - t0 < CPU_TARGET_S:
            s.run(None, feed)
            n += 1
        print(f"ort: {(time.process_time() - t0) / n * 1e3:.4f} ms")
        return
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append((time.perf_counter() - t0) * 1e3)
    print(f"ort: {float(np.median(t)):.4f} ms")


def run_kiln_bench(kiln, path, threads, runs, tier):
    """One pinned `kiln bench` process: (its CPU seconds, user + system, from wait4; its
    printed median ms)."""
    cmd = ["taskset", "-c", cpus_for(threads), kiln, "bench", path, "--engine", "jit", "--threads", str(threads),
           "--runs", str(runs)]
    if tier:
        cmd += ["--gemm-tier", tier]
    with tempfile.TemporaryFile(mode="w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"kiln bench{' --gemm-tier ' + tier if tier else ''}: {err.read().strip()}")
    return ru.ru_utime + ru.ru_stime, float(re.search(r"jit: median ([\d.]+) ms", out).group(1))


def kiln_ms(kiln, path, threads, runs, tier=None, clock="wall"):
    """kiln's time per run in ms: `wall`, `kiln bench`'s median of `runs`; `cpu`, the
    difference of the CPU time of a 1-run and a (1 + k)-run `kiln bench` process divided by k
    (so compilation and start-up cancel), k ≥ 3 chosen for about CPU_TARGET_S seconds, and
    raised (up to twice, ×4) while the difference is implausibly small against the wall median.
    The 1-run process runs twice, before and after the first (1 + k)-run one, and the lesser
    CPU time counts: a disturbed start-up (page faults of a large model's weights and arena on a
    loaded machine) only ever adds CPU time, and one such 1-run process would otherwise make the
    difference too small (a model at more than 100 % of the peak)."""
    if clock == "wall":
        return run_kiln_bench(kiln, path, threads, runs, tier)[1]
    lo, median = run_kiln_bench(kiln, path, threads, 1, tier)
    # about CPU_TARGET_S of runs, and at least twice the 1-run process's CPU time (start-up
    # included: a large model's weights load with a variation of a few runs' time)
    k = max(3, min(100_000, math.ceil(max(CPU_TARGET_S, 2 * lo) / max(median, 1e-3) * 1e3)))
    for attempt in range(3):
        hi, hi_median = run_kiln_bench(kiln, path, threads, 1 + k, tier)
        # the 1-run process's "median" is one wall-clock run, which a loaded machine can
        # stretch many times over; the (1 + k)-run process's is a real median
        median = min(median, hi_median)
        if attempt == 0:
            lo = min(lo, run_kiln_bench(kiln, path, threads, 1, tier)[0])
        # the runs' CPU time must stand out of the start-up's variation (loading a large
        # model's weights varies by more than a few runs of it): else again with more runs
        if hi - lo > 0.1 * k * median / 1e3:
            return (hi - lo) / k * 1e3
        k *= 4
    raise RuntimeError(f"kiln's CPU time per run is lost in its start-up's variation ({hi - lo:.3f} s "
                       f"over {k // 4} runs); try --clock wall")


def ort_ms(path, inputs, threads, runs, clock="wall"):
    cmd = ["taskset", "-c", cpus_for(threads), sys.executable, os.path.abspath(__file__), "--ort-worker",
           path, str(threads), str(runs), clock] + [f"{n}={p}" for n, p, _ in inputs]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, KILN_BENCH_IN_VENV="1"))
    if out.returncode != 0:
        raise RuntimeError(f"ORT: {out.stderr.strip()[-2000:]}")
    return float(re.search(r"ort: ([\d.]+) ms", out.stdout).group(1))


def unsupported_ops(text):
    """op_type -> count, from `kiln check`'s list of unsupported nodes."""
    ops = {}
    for m in re.finditer(r"\((\w+), opset \d+\)", text):
        ops[m.group(1)] = ops.get(m.group(1), 0) + 1
    return ops


def measure(kiln, name, path, workdir, seed, runs, rounds, threads, extra=None, tiers=(None,), clock="auto"):
    """Everything one row needs: check, error against ORT, FLOPs, times per run
    (`row['times'][T]`: {tier: kiln ms, 'ort': ORT ms} at T threads, on the clock
    `clock_for(clock, T)`; tier None = kiln's default), and the ratios kiln / ORT
    (`row['ratios'][T][tier]`: the median of the rounds' ratios). Never raises: a failure is
    recorded in `row['error']` with the stage that failed."""
    import numpy as np

    os.makedirs(workdir, exist_ok=True)
    row = dict(name=name, path=path, imports=False, error=None, abs=None, rel=None, times={}, flops=None)
    if extra:
        row.update(extra)
    chk = subprocess.run([kiln, "check", path], capture_output=True, text=True)
    if chk.returncode != 0:
        row["error"] = "kiln check: " + (chk.stdout + chk.stderr).strip()
        row["ops"] = unsupported_ops(chk.stdout + chk.stderr)
        return row
    row["imports"] = True
    row["flops"] = total_flops(subprocess.run([kiln, "summary", path], capture_output=True, text=True).stdout)
    try:
        inputs = make_inputs(path, workdir, seed)
        _, outs = io_names(path)
        s = ort_session(path, 1)
        want = s.run(outs, {n: x for n, _, x in inputs})
        cmd = [kiln, "run", path]
        for n, p, _ in inputs:
            cmd += ["--input", f"{n}={p}"]
        got_paths = [os.path.join(workdir, f"out_{i}_{safe(o)}.npy") for i, o in enumerate(outs)]
        for o, p in zip(outs, got_paths):
            cmd += ["--output", f"{o}={p}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            row["error"] = "kiln run: " + r.stderr.strip()
            return row
        abs_err, rel_err = 0.0, 0.0
        for w, p in zip(want, got_paths):
            g = np.load(p)
            if g.shape != w.shape:
                row["error"] = f"kiln run: output shape {g.shape}, ORT's {w.shape}"
                return row
            a = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if w.size else 0.0
            scale = float(np.max(np.abs(w))) if w.size else 0.0
            abs_err = max(abs_err, a)
            rel_err = max(rel_err, a / scale if scale > 0 else a)
            if not np.all(np.isfinite(g)):
                rel_err = float("inf")
        row["abs"], row["rel"] = abs_err, rel_err
        del s
        per = {t: {k: [] for k in (*tiers, "ort")} for t in threads}
        for _ in range(rounds):  # the engines alternate, each in its own pinned process
            for t in threads:
                for tier in tiers:
                    per[t][tier].append(kiln_ms(kiln, path, t, runs, tier, clock_for(clock, t)))
                per[t]["ort"].append(ort_ms(path, inputs, t, runs, clock_for(clock, t)))
        row["times"] = {t: {k: float(np.median(v)) for k, v in d.items()} for t, d in per.items()}
        # each round's kiln time over the ORT time measured right after it: the median of
        # those is the ratio (a slow spell of a shared host lands on both of a round)
        row["ratios"] = {t: {k: float(np.median([a / b for a, b in zip(d[k], d["ort"])])) for k in tiers}
                         for t, d in per.items()}
    except Exception as e:  # a failing model must not stop the others
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def progress(r, tiers=(None,)):
    """One stderr line per measured row, as the run goes."""
    t = "  ".join(f"{k}t " + "/".join(f"{d[x]:.3f}" for x in (*tiers, "ort")) + " ms"
                  for k, d in r["times"].items())
    print(f"  [{r['name']}: rel {r['rel']}, {t}{' ERROR' if r['error'] else ''}]", file=sys.stderr, flush=True)


def geomean(xs):
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def fmt_ms(v):
    return f"{v:.3f}" if v < 100 else f"{v:.1f}"


def tier_label(tier):
    return "kiln" if tier is None else tier


def ratio(r, t, tier):
    """kiln / ORT for row `r` at `t` threads on `tier`: the median of the rounds' ratios."""
    return r["ratios"][t][tier]


def print_table(rows, threads, extra_cols=(), tiers=(None,), peak_gflops=None, clock="auto"):
    """The results table, the geomeans, the worst ratios and every failure in full. Per thread
    count T: kiln's median ms (per tier), ORT's, the ratio kiln/ORT (per tier) and kiln's
    GFLOP/s as a percentage of T cores' FMA peak (`kiln summary`'s FLOPs; per tier). Returns
    True when every model imported, ran and agreed with ORT."""
    cols = []  # (title, width, f(row, t) -> str or None)
    for t in threads:
        for tier in tiers:
            cols.append((f"{tier_label(tier)} {t}t", 9, t, lambda r, t, tier=tier: fmt_ms(r["times"][t][tier])))
        cols.append((f"ORT {t}t", 9, t, lambda r, t: fmt_ms(r["times"][t]["ort"])))
        for tier in tiers:
            title = "ratio" if len(tiers) == 1 else f"r:{tier_label(tier)}"
            cols.append((title, max(6, len(title)), t,
                         lambda r, t, tier=tier: f"{ratio(r, t, tier):.2f}"))
        if peak_gflops:
            for tier in tiers:
                title = "%peak" if len(tiers) == 1 else f"%pk:{tier_label(tier)}"
                cols.append((title, max(6, len(title)), t, lambda r, t, tier=tier: (
                    f"{100 * r['flops'] / (r['times'][t][tier] * 1e6) / (peak_gflops * t):.1f}"
                    if r["flops"] and r["times"][t][tier] > 0 else "—")))
    head = f"{'network':<22} {'imports':>7} {'max abs err':>11} {'max rel err':>11} {'pass':>4}"
    for c, w in extra_cols:
        head += f" {c:>{w}}"
    for title, w, _, _ in cols:
        head += f" {title:>{w}}"
    print(head)
    ok = True
    for r in rows:
        line = f"{r['name']:<22} {'yes' if r['imports'] else 'NO':>7} "
        if r["rel"] is None:
            line += f"{'—':>11} {'—':>11} {'—':>4}"
        else:
            passed = r["rel"] <= REL_TOL
            ok &= passed
            line += f"{r['abs']:>11.2e} {r['rel']:>11.2e} {'yes' if passed else 'NO':>4}"
        for c, w in extra_cols:
            line += f" {str(r.get(c, '—')):>{w}}"
        for _, w, t, cell in cols:
            line += f" {cell(r, t) if t in r['times'] else '—':>{w}}"
        print(line, flush=True)
        ok &= r["error"] is None
    timed = [r for r in rows if r["times"]]
    print(f"\ngeomean of kiln / ORT over the {len(timed)} timed networks "
          "(> 1: kiln slower), and the worst ratios:")
    for t in threads:
        for tier in tiers:
            ratios = sorted(((ratio(r, t, tier), r["name"]) for r in timed if t in r["times"]), reverse=True)
            g = geomean([x for x, _ in ratios])
            worst = ", ".join(f"{n} {x:.2f}" for x, n in ratios[:4])
            print(f"  {t} thread{'s' if t > 1 else ' '} ({clock_for(clock, t)} time), {tier_label(tier):<9} "
                  f"geomean {g:.2f}   worst: {worst}")
    failed = [r for r in rows if r["error"]]
    if failed:
        print("\nnot imported or failed (kiln's error; of `kiln check`'s list, the first node of each operator):")
        for r in failed:
            ops = r.get("ops")
            opsum = f" [unsupported: {', '.join(f'{k} x{v}' for k, v in sorted(ops.items()))}]" if ops else ""
            print(f"- {r['name']}{opsum}:\n    " + shorten_check(r["error"]).replace("\n", "\n    "))
    return ok


def shorten_check(text):
    """`kiln check`'s list with one line per unsupported operator (the first such node) and a
    count of the rest; other errors as they are."""
    lines, seen, dropped = [], set(), 0
    for line in text.splitlines():
        m = re.search(r"\((\w+), opset \d+\)", line)
        if m and m.group(1) in seen:
            dropped += 1
            continue
        if m:
            seen.add(m.group(1))
        lines.append(line)
    if dropped:
        lines.insert(len(lines) - 1, f"(… {dropped} more nodes of these operators)")
    return "\n".join(lines)


def parse_threads(s):
    return [int(t) for t in s.split(",") if t]


def parse_tiers(s):
    """`--tier auto,avx2,cranelift` -> the `kiln bench --gemm-tier` values to time (None: no
    flag, kiln's default tier)."""
    if not s:
        return [None]
    return [t for t in s.split(",") if t]


def arg(args, flag, default):
    if flag in args:
        i = args.index(flag)
        if i + 1 >= len(args):
            raise SystemExit(f"{flag} needs a value")
        v = args[i + 1]
        del args[i:i + 2]
        return v
    return default


def load():
    a = os.getloadavg()
    return f"load average {a[0]:.2f} {a[1]:.2f} {a[2]:.2f}"


def versions():
    import onnx
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}, onnx {onnx.__version__}"


def main():
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--ort-worker":
        ort_worker(sys.argv[2:])
        return
    ensure_venv()
    import numpy as np
    import onnx

    args = sys.argv[1:]
    runs = int(arg(args, "--runs", "10"))
    rounds = int(arg(args, "--rounds", "3"))
    threads = parse_threads(arg(args, "--threads", "1,2"))
    sets = arg(args, "--sets", None)
    only = arg(args, "--nets", None)
    only = set(only.split(",")) if only else None
    exe = arg(args, "--kiln", None)
    seed = int(arg(args, "--seed", "0"))
    tiers = parse_tiers(arg(args, "--tier", None))
    clock = arg(args, "--clock", "auto")
    if clock not in ("auto", "cpu", "wall"):
        raise SystemExit("--clock is auto, cpu or wall")
    files = [a for a in args if not a.startswith("--")]
    if len(files) != len(args):
        raise SystemExit(f"unknown option in {args}; see --help")
    # the three sets by default, none when files are given (`--sets` adds some to them)
    sets = [s for s in (sets if sets is not None else "" if files else "zoo,speed,light").split(",") if s]
    unknown = [s for s in sets if s not in ("zoo", "speed", "light")]
    if unknown:
        raise SystemExit(f"--sets {','.join(unknown)}: the sets are zoo, speed and light")
    os.makedirs(WORK, exist_ok=True)
    kiln = kiln_bin(exe)

    def rng_for(name):  # each model's weights depend on the seed and its name only
        return np.random.default_rng([seed, zlib.crc32(name.encode())])

    # (row name, how to make the .onnx, summary-check .kiln file or None)
    jobs = []
    if "zoo" in sets:
        for net in NETS:
            kf = os.path.join(ROOT, "examples", "models", f"{net}.kiln")
            jobs.append((net, lambda kf=kf, net=net: kiln_to_onnx(kf, rng_for(net)), kf))
    if "speed" in sets:
        for net in SPEED:
            if "zoo" in sets and net in NETS:
                continue  # the zoo row is the same network
            if net in NETS:
                kf = os.path.join(ROOT, "examples", "models", f"{net}.kiln")
                jobs.append((net, lambda kf=kf, net=net: kiln_to_onnx(kf, rng_for(net)), kf))
            else:
                jobs.append((net, lambda net=net: speed_model(net, rng_for(net)), None))
    if "light" in sets:
        for net in LIGHT:
            p = os.path.join(light_dir(), f"light_{net}.onnx")
            jobs.append((f"light_{net}", lambda p=p, net=net: expose_logits(randomize_weights(onnx.load(p), rng_for(net))), None))
    for f in files:
        jobs.append((os.path.basename(f), os.path.abspath(f), None))

    widest = header(kiln, threads, tiers, clock)
    print(f"{versions()}, {runs} timed runs x {rounds} rounds, median ms", flush=True)
    rows = []
    for name, make, kf in jobs:
        if only and name not in only:
            continue
        if isinstance(make, str):
            # a file given on the command line: its work files in a folder of their own, which
            # cannot be the file itself (one of the sets' models, say, given by its path here)
            path, workdir = make, os.path.join(WORK, "files", name)
        else:
            path, workdir = os.path.join(WORK, f"{name}.onnx"), os.path.join(WORK, name)
            onnx.save(make(), path)
        extra = {}
        if kf:
            k_sum = subprocess.run([kiln, "summary", path], capture_output=True, text=True).stdout
            z_sum = subprocess.run([kiln, "summary", kf], capture_output=True, text=True).stdout
            extra["summary"] = "same" if totals(k_sum) == totals(z_sum) and totals(z_sum) else "DIFFERS"
        r = measure(kiln, name, path, workdir, seed, runs, rounds, threads, extra, tiers, clock)
        rows.append(r)
        progress(r, tiers)
    widest = footer(widest)
    print()
    ok = print_table(rows, threads, extra_cols=[("summary", 7)], tiers=tiers, peak_gflops=widest, clock=clock)
    ok &= all(r.get("summary", "same") == "same" for r in rows)
    print(f"\nrel err: max |kiln − ORT| / max |ORT| over the output (worst output), pass: ≤ {REL_TOL:g}; "
          "ratio: kiln / ORT time per run, the median of the rounds' ratios (> 1: kiln slower); summary: `kiln summary` totals on the "
          ".onnx vs the .kiln zoo; %peak: kiln's GFLOP/s (`kiln summary`'s FLOPs / median) over T cores' "
          "widest FMA peak (the best of the start and end measurements)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
