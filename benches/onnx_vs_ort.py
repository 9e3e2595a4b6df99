#!/usr/bin/env python3
"""kiln vs ONNX Runtime on the same ONNX files.

For each zoo network (LeNet-5, AlexNet, VGG-16, ResNet-18, the MobileNet block) this script
  1. writes an ONNX model with onnx.helper and random weights. The architecture is read from
     examples/models/NET.kiln by the small text-IR reader below (Python, independent of kiln's
     Rust code), so the ONNX file and the .kiln zoo describe the same network;
  2. runs it with ONNX Runtime and with `kiln run` (JIT, release binary) on the same input and
     prints the max abs / max rel error of kiln against ONNX Runtime;
  3. prints the median latency of kiln's JIT (`kiln bench --engine jit`) and of ONNX Runtime
     at 1 and 2 threads, side by side;
  4. checks that `kiln summary` prints the same totals on the .onnx file as on the .kiln zoo.

Usage: python3 benches/onnx_vs_ort.py [--runs N] [--nets lenet5,resnet18] [--kiln PATH]
It makes a virtual environment under /tmp (numpy, onnx, onnxruntime from PyPI) and builds
target/release/kiln with cargo if it is missing.
"""

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = "/tmp/kiln-onnx-bench-venv"
WORK = "/tmp/kiln-onnx-bench"
NETS = ["lenet5", "alexnet", "vgg16", "resnet18", "mobilenet_block"]


def ensure_venv():
    if os.environ.get("KILN_BENCH_IN_VENV"):
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([py, "-m", "pip", "install", "-q", "numpy", "onnx", "onnxruntime"])
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], dict(os.environ, KILN_BENCH_IN_VENV="1"))


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


def kiln_to_onnx(path, rng):
    """The graph of a .kiln file as an ONNX model with random weights (opset 13)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, outputs, shape, params, role = [], [], [], [], {}, [], {}
    for line in open(path):
        if line.startswith("#") or not line.strip() or line.startswith("graph") or line.strip() == "}":
            continue
        if m := DECL.match(line):
            kind, name, d = m.group(1), m.group(2), dims(m.group(3))
            shape[name] = d
            if kind == "input":
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, d))
                continue
            params.append(name)
            continue
        if m := OUT.match(line):
            outputs.append(helper.make_tensor_value_info(m.group(1), TensorProto.FLOAT, shape[m.group(1)]))
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="kiln-bench")
    model.ir_version = 8
    return model


def kiln_bin(exe=None):
    if exe:
        return exe
    exe = os.path.join(ROOT, "target", "release", "kiln")
    if not os.path.exists(exe):
        subprocess.check_call(["cargo", "build", "--release", "-p", "kiln"], cwd=ROOT)
    return exe


def totals(text):
    return [l.strip() for l in text.splitlines() if l.strip().startswith("Total ")]


def main():
    ensure_venv()
    import numpy as np
    import onnx
    import onnxruntime as ort

    runs = 10
    nets = NETS
    exe = None
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a == "--runs":
            runs = int(args[i + 1])
        if a == "--nets":
            nets = args[i + 1].split(",")
        if a == "--kiln":
            exe = args[i + 1]
    os.makedirs(WORK, exist_ok=True)
    kiln = kiln_bin(exe)
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, {runs} timed runs, median ms")
    print(f"{'network':<16} {'max abs err':>11} {'max rel err':>11} {'summary':>8}  "
          f"{'kiln 1t':>9} {'ORT 1t':>9} {'kiln 2t':>9} {'ORT 2t':>9}")
    failed = False
    for net in nets:
        kiln_file = os.path.join(ROOT, "examples", "models", f"{net}.kiln")
        model = kiln_to_onnx(kiln_file, rng)
        path = os.path.join(WORK, f"{net}.onnx")
        onnx.save(model, path)
        x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = rng.standard_normal(x_shape).astype(np.float32)
        xin, yout = os.path.join(WORK, f"{net}_x.npy"), os.path.join(WORK, f"{net}_y.npy")
        np.save(xin, x)

        def ort_session(threads):
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            o.inter_op_num_threads = 1
            return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

        s1 = ort_session(1)
        feed = {model.graph.input[0].name: x}
        want = s1.run(None, feed)[0]
        subprocess.run([kiln, "run", path, "--input", xin, "--output", yout], check=True)
        got = np.load(yout)
        abs_err = float(np.max(np.abs(got - want)))
        rel_err = abs_err / float(np.max(np.abs(want)))

        k_sum = subprocess.run([kiln, "summary", path], capture_output=True, text=True, check=True).stdout
        z_sum = subprocess.run([kiln, "summary", kiln_file], capture_output=True, text=True, check=True).stdout
        same = totals(k_sum) == totals(z_sum)
        if not same or rel_err > 1e-4:
            failed = True
            if not same:
                print(f"  {net}: summary totals differ: onnx {totals(k_sum)} vs kiln {totals(z_sum)}")

        def ort_ms(threads):
            s = s1 if threads == 1 else ort_session(threads)
            s.run(None, feed)
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                t.append((time.perf_counter() - t0) * 1e3)
            return float(np.median(t))

        def kiln_ms(threads):
            out = subprocess.run([kiln, "bench", path, "--engine", "jit", "--threads", str(threads), "--runs", str(runs)],
                                 capture_output=True, text=True, check=True).stdout
            return float(re.search(r"jit: median ([\d.]+) ms", out).group(1))

        print(f"{net:<16} {abs_err:>11.2e} {rel_err:>11.2e} {'same' if same else 'DIFFERS':>8}  "
              f"{kiln_ms(1):>9.3f} {ort_ms(1):>9.3f} {kiln_ms(2):>9.3f} {ort_ms(2):>9.3f}", flush=True)
    print("rel err: max |kiln − ORT| / max |ORT|; summary: `kiln summary` totals on the .onnx vs the .kiln zoo")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
