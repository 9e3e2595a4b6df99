//! Gradients and trained weights of an imported model are the file's own initializers: a Gemm
//! with `alpha`, `beta`, `transA`/`transB` and an Unsqueezed bias reports `kiln grad`
//! gradients and `Trainer` weights under the initializers' names, equal to the gradient
//! derived by hand below (in f64), not under tensors the importer derived from them.

use kiln::onnx::prost::Message;
use kiln::onnx::proto::*;
use kiln::{Loss, Optimizer, Tensor, Trainer, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_dir(test: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-onnx-provenance-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&v| Dimension {
                            value: Some(DimensionValue::DimValue(v)),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: Some(f),
        ..Default::default()
    }
}

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: Some(i),
        ..Default::default()
    }
}

/// One Gemm case: `y = alpha·op(A)·op(B) + beta·C + u` (u Unsqueezed from `[N]` to `[1, N]`).
struct Case {
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
    beta: f64,
    /// dims of C: `[N]` or `[1, N]`
    c_dims: Vec<i64>,
}

const M: usize = 2;
const K: usize = 3;
const N: usize = 4;

fn x_data() -> Vec<f32> {
    (0..M * K).map(|i| (i as f32 * 0.37).sin()).collect()
}
fn b_data() -> Vec<f32> {
    (0..K * N).map(|i| (i as f32 * 0.71 + 0.2).cos()).collect()
}
fn c_data() -> Vec<f32> {
    (0..N).map(|i| 0.1 * i as f32 - 0.15).collect()
}
fn u_data() -> Vec<f32> {
    (0..N).map(|i| 0.05 - 0.02 * i as f32).collect()
}
fn t_data() -> Vec<f32> {
    (0..M * N).map(|i| 0.3 * (i % 3) as f32 - 0.2).collect()
}

impl Case {
    fn x_dims(&self) -> [usize; 2] {
        if self.trans_a { [K, M] } else { [M, K] }
    }
    fn b_dims(&self) -> [usize; 2] {
        if self.trans_b { [N, K] } else { [K, N] }
    }

    fn model(&self, path: &Path) {
        let xd = self.x_dims();
        let bd = self.b_dims();
        let mut attrs = vec![
            attr_f("alpha", self.alpha as f32),
            attr_f("beta", self.beta as f32),
        ];
        if self.trans_a {
            attrs.push(attr_i("transA", 1));
        }
        if self.trans_b {
            attrs.push(attr_i("transB", 1));
        }
        let node = |op: &str, ins: &[&str], out: &str, attribute: Vec<AttributeProto>| NodeProto {
            op_type: op.into(),
            name: out.into(),
            input: ins.iter().map(|v| v.to_string()).collect(),
            output: vec![out.into()],
            attribute,
            ..Default::default()
        };
        let bytes = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                name: "gemm".into(),
                node: vec![
                    node("Gemm", &["x", "fc.B", "fc.C"], "g", attrs),
                    node("Unsqueeze", &["u", "axes"], "uu", vec![]),
                    node("Add", &["g", "uu"], "y", vec![]),
                ],
                input: vec![value("x", &[xd[0] as i64, xd[1] as i64])],
                output: vec![value("y", &[M as i64, N as i64])],
                initializer: vec![
                    floats("fc.B", &[bd[0] as i64, bd[1] as i64], &b_data()),
                    floats("fc.C", &self.c_dims, &c_data()),
                    floats("u", &[N as i64], &u_data()),
                    TensorProto {
                        name: "axes".into(),
                        dims: vec![1],
                        data_type: data_type::INT64,
                        int64_data: vec![0],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        std::fs::write(path, bytes).unwrap();
    }

    /// The gradients of `mean((y − t)²)` w.r.t. `fc.B`, `fc.C`, `u` (in their file layouts),
    /// derived by hand: `dy = 2(y − t)/(M·N)`, `d op(B) = alpha·op(A)ᵀ·dy`, `dC = beta·Σ_m dy`,
    /// `du = Σ_m dy`.
    fn reference(&self) -> HashMap<&'static str, Vec<f64>> {
        let (x, b, c, u, t) = (x_data(), b_data(), c_data(), u_data(), t_data());
        let a =
            |m: usize, k: usize| -> f64 { f64::from(if self.trans_a { x[k * M + m] } else { x[m * K + k] }) };
        let bb =
            |k: usize, n: usize| -> f64 { f64::from(if self.trans_b { b[n * K + k] } else { b[k * N + n] }) };
        let mut dy = [0.0f64; M * N];
        for m in 0..M {
            for n in 0..N {
                let ab: f64 = (0..K).map(|k| a(m, k) * bb(k, n)).sum();
                let y = self.alpha * ab + self.beta * f64::from(c[n]) + f64::from(u[n]);
                dy[m * N + n] = 2.0 * (y - f64::from(t[m * N + n])) / (M * N) as f64;
            }
        }
        let mut db = vec![0.0f64; K * N];
        for k in 0..K {
            for n in 0..N {
                let g: f64 = (0..M).map(|m| a(m, k) * dy[m * N + n]).sum::<f64>() * self.alpha;
                let at = if self.trans_b { n * K + k } else { k * N + n };
                db[at] = g;
            }
        }
        let col = |n: usize| (0..M).map(|m| dy[m * N + n]).sum::<f64>();
        HashMap::from([
            ("fc.B", db),
            ("fc.C", (0..N).map(|n| self.beta * col(n)).collect()),
            ("u", (0..N).map(col).collect()),
        ])
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            trans_a: false,
            trans_b: true,
            alpha: 0.5,
            beta: 2.0,
            c_dims: vec![N as i64],
        },
        Case {
            trans_a: true,
            trans_b: false,
            alpha: -1.5,
            beta: 0.25,
            c_dims: vec![1, N as i64],
        },
    ]
}

/// The trainer's current weights, through the file it saves (`kiln train --save`).
fn saved_weights(tr: &Trainer, dir: &Path) -> HashMap<String, Tensor<f32>> {
    let p = dir.join("saved.safetensors");
    tr.save_safetensors(&p).unwrap();
    kiln::runtime::load_safetensors(&p).unwrap()
}

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-5 + 1e-4 * w.abs(),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn kiln_grad_reports_the_files_initializers() {
    let dir = temp_dir("grad");
    for (i, case) in cases().iter().enumerate() {
        let p = dir.join(format!("gemm{i}.onnx"));
        case.model(&p);
        let xd = case.x_dims();
        let x = dir.join("x.npy");
        let t = dir.join("t.npy");
        kiln::runtime::write_npy(&x, &Value::F(Tensor::new(xd, x_data()).unwrap())).unwrap();
        kiln::runtime::write_npy(&t, &Value::F(Tensor::new([M, N], t_data()).unwrap())).unwrap();
        let g = dir.join("g.safetensors");
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["grad", &s(&p), "--input", &format!("x={}", s(&x))])
            .args(["--target", &s(&t), "--loss", "mse", "--output", &s(&g)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let grads = kiln::runtime::load_safetensors(&g).unwrap();
        let params: BTreeSet<&str> = grads
            .keys()
            .map(String::as_str)
            .filter(|k| !k.starts_with("grad_of_"))
            .collect();
        assert_eq!(params, BTreeSet::from(["fc.B", "fc.C", "u"]), "case {i}");
        for (name, want) in case.reference() {
            close(grads[name].data(), &want, &format!("case {i}: {name}"));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// One SGD step: the trainer's weights (as `save_safetensors` writes them) are exactly the
/// file's initializers, each moved by `−lr·gradient`.
#[test]
fn trainer_weights_are_the_files_initializers() {
    let dir = temp_dir("train");
    let lr = 0.1;
    for (i, case) in cases().iter().enumerate() {
        let p = dir.join(format!("gemm{i}.onnx"));
        case.model(&p);
        let m = kiln::onnx::load(&p).unwrap();
        let mut tr = Trainer::new(&m.graph, Loss::mse(), Optimizer::sgd(lr), Default::default()).unwrap();
        tr.set_weights(&m.weights).unwrap();
        let before = saved_weights(&tr, &dir);
        let names: BTreeSet<&str> = before.keys().map(String::as_str).collect();
        assert_eq!(names, BTreeSet::from(["fc.B", "fc.C", "u"]), "case {i}");
        let x = Value::F(Tensor::new(case.x_dims(), x_data()).unwrap());
        let t = Value::F(Tensor::new([M, N], t_data()).unwrap());
        tr.step(&HashMap::from([("x".to_string(), x)]), &t).unwrap();
        let after = saved_weights(&tr, &dir);
        for (name, g) in case.reference() {
            let want: Vec<f64> = before[name]
                .data()
                .iter()
                .zip(&g)
                .map(|(&w, d)| f64::from(w) - f64::from(lr) * d)
                .collect();
            close(
                after[name].data(),
                &want,
                &format!("case {i}: {name} after a step"),
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Several steps: the weights the JIT trainer reaches equal the interpreter's, so what the
/// JIT computes once from the weights (the Gemm's transpose and scale of B) follows B as it
/// is updated.
#[test]
fn derived_weights_follow_the_trained_ones() {
    let dir = temp_dir("steps");
    for (i, case) in cases().iter().enumerate() {
        let p = dir.join(format!("gemm{i}.onnx"));
        case.model(&p);
        let m = kiln::onnx::load(&p).unwrap();
        let x = Value::F(Tensor::new(case.x_dims(), x_data()).unwrap());
        let t = Value::F(Tensor::new([M, N], t_data()).unwrap());
        let feeds = HashMap::from([("x".to_string(), x)]);
        let mut finals = Vec::new();
        for engine in [kiln::Engine::Jit, kiln::Engine::Interp] {
            let options = kiln::TrainOptions {
                engine,
                ..Default::default()
            };
            let mut tr = Trainer::new(&m.graph, Loss::mse(), Optimizer::sgd(0.5), options).unwrap();
            tr.set_weights(&m.weights).unwrap();
            let losses: Vec<f32> = (0..4).map(|_| tr.step(&feeds, &t).unwrap()).collect();
            finals.push((losses, saved_weights(&tr, &dir)));
        }
        let (jit, interp) = (&finals[0], &finals[1]);
        for (a, b) in jit.0.iter().zip(&interp.0) {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                "case {i}: losses {:?} vs {:?}",
                jit.0,
                interp.0
            );
        }
        for (name, w) in &interp.1 {
            for (a, b) in jit.1[name].data().iter().zip(w.data()) {
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                    "case {i}: {name}: {a} vs {b}"
                );
            }
        }
        // and training moved the loss
        assert!(interp.0[3] < interp.0[0], "case {i}: {:?}", interp.0);
    }
    std::fs::remove_dir_all(&dir).ok();
}
