//! ONNX's own backend test cases (tests/data, written by scripts/onnx_node_cases.py) through
//! the importer, the reference interpreter and the JIT, compared with the expected outputs at
//! each case's tolerance (ONNX's runner: `|got − want| ≤ atol + rtol·|want|`).
//!
//! tests/data/manifest.txt records each case's status, `pass` or `skip: REASON`; the test fails
//! when a case's status drifts either way (a skipped case that now passes is a failure too, so
//! the manifest and docs/onnx.md stay true). `KILN_ONNX_BLESS=1` rewrites the manifest instead.
//!
//! One adaptation of ONNX's runner: a data set's integer inputs are bound as constants at
//! import (`kiln_onnx::load_bytes_bound`), because kiln's shapes are static and such inputs
//! are shapes, pads or axes; so are the float inputs a Clip reads as its bounds (kiln's clip
//! takes them as attributes); other float inputs are fed at run time as usual.

use kiln_ir::{Tensor, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("data")
}

struct Case {
    rtol: f32,
    atol: f32,
}

fn read_case(dir: &Path) -> Case {
    let text = std::fs::read_to_string(dir.join("case.txt")).unwrap_or_default();
    let get = |k: &str, d: f32| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(d)
    };
    Case {
        rtol: get("rtol ", 1e-3),
        atol: get("atol ", 1e-7),
    }
}

/// `test_data_set_0/input_0.pb`: how a data file is named in a reason (no machine paths).
fn shown(path: &Path) -> String {
    let parts: Vec<_> = path.iter().rev().take(2).collect();
    parts
        .iter()
        .rev()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn read_pb(path: &Path) -> Result<Tensor<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", shown(path)))?;
    kiln_onnx::read_tensor_bytes(&bytes).map_err(|e| format!("{}: {e}", shown(path)))
}

fn data_sets(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.is_dir()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
    });
    v.sort();
    v
}

fn numbered(dir: &Path, kind: &str) -> Vec<PathBuf> {
    (0..)
        .map(|k| dir.join(format!("{kind}_{k}.pb")))
        .take_while(|p| p.exists())
        .collect()
}

fn compare(what: &str, want: &Tensor<f32>, got: &Tensor<f32>, c: &Case) -> Result<(), String> {
    if want.dims() != got.dims() {
        return Err(format!(
            "{what}: shape {:?}, expected {:?}",
            got.dims(),
            want.dims()
        ));
    }
    for (i, (&w, &g)) in want.data().iter().zip(got.data()).enumerate() {
        let ok = (w.is_nan() && g.is_nan()) || w == g || (g - w).abs() <= c.atol + c.rtol * w.abs();
        if !ok {
            return Err(format!("{what}: element {i} is {g}, expected {w}"));
        }
    }
    Ok(())
}

/// The values some Clip node reads as its bounds (inputs 1 and 2).
fn clip_bounds(bytes: &[u8]) -> Result<Vec<String>, String> {
    let m = <kiln_onnx::proto::ModelProto as prost::Message>::decode(bytes)
        .map_err(|e| format!("decode: {e}"))?;
    let g = m.graph.unwrap_or_default();
    Ok(g.node
        .iter()
        .filter(|n| n.op_type == "Clip")
        .flat_map(|n| n.input.iter().skip(1).cloned())
        .collect())
}

/// The names of the graph inputs that are fed (not initializers), in the file's order.
fn fed_inputs(bytes: &[u8]) -> Result<Vec<String>, String> {
    let m = <kiln_onnx::proto::ModelProto as prost::Message>::decode(bytes)
        .map_err(|e| format!("decode: {e}"))?;
    let g = m.graph.unwrap_or_default();
    Ok(g.input
        .iter()
        .filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone())
        .collect())
}

/// Runs one case; `Err` is the reason it does not pass. Integer inputs of a data set (the
/// shape of a Reshape, the pads of a Pad) and a Clip's bounds are bound as constants: kiln's
/// shapes are static, its clip's bounds attributes.
fn run_case(dir: &Path) -> Result<(), String> {
    let c = read_case(dir);
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let names = fed_inputs(&bytes)?;
    let bounds = clip_bounds(&bytes)?;
    for ds in data_sets(dir) {
        let ins = numbered(&ds, "input");
        let outs = numbered(&ds, "output");
        if ins.len() != names.len() {
            return Err(format!(
                "data set has {} inputs, the model {}",
                ins.len(),
                names.len()
            ));
        }
        let mut bound = HashMap::new();
        let mut fed = Vec::new();
        for (name, path) in names.iter().zip(&ins) {
            let raw = std::fs::read(path).map_err(|e| e.to_string())?;
            let k = kiln_onnx::read_const_bytes(&raw).map_err(|e| format!("{}: {e}", shown(path)))?;
            if k.as_i64().is_some() || bounds.contains(name) {
                bound.insert(name.clone(), k);
            } else {
                fed.push((name.clone(), read_pb(path)?));
            }
        }
        let model = kiln_onnx::load_bytes_bound(&bytes, None, &bound).map_err(|e| format!("import: {e}"))?;
        let mut feeds = HashMap::new();
        let mut graph = model.graph.clone();
        for (onnx_name, t) in fed {
            let ir_name = model
                .inputs
                .iter()
                .find(|(o, _)| *o == onnx_name)
                .map(|(_, i)| i.clone())
                .ok_or_else(|| format!("input `{onnx_name}` is not an input of the imported graph"))?;
            // a symbolic batch dim was imported as 1: recompile for the data's batch
            let id = graph.find(&ir_name).ok_or("input node vanished")?;
            let declared = graph.node(id).ty.dims().to_vec();
            if !declared.is_empty()
                && declared.len() == t.dims().len()
                && declared[1..] == t.dims()[1..]
                && declared[0] != t.dims()[0]
            {
                graph = graph.with_batch(t.dims()[0]).map_err(|e| format!("batch: {e}"))?;
            }
            feeds.insert(ir_name, Value::F(t));
        }
        let want: Vec<Tensor<f32>> = outs.iter().map(|p| read_pb(p)).collect::<Result<_, _>>()?;
        let interp = kiln_interp::run::<f32>(&graph, &feeds, &model.weights)
            .map_err(|e| format!("interpreter: {e}"))?;
        let opts = kiln_jit::JitOptions::default();
        let mut jit = kiln_runtime::compile(&graph, &opts).map_err(|e| format!("jit compile: {e}"))?;
        jit.set_weights(&model.weights)
            .map_err(|e| format!("jit weights: {e}"))?;
        let jit_out = jit.run(&feeds).map_err(|e| format!("jit run: {e}"))?;
        for (k, w) in want.iter().enumerate() {
            let (onnx_name, ir_name) = model
                .outputs
                .get(k)
                .ok_or("more expected outputs than model outputs")?;
            for (engine, results) in [("interpreter", &interp), ("jit", &jit_out)] {
                let got = results
                    .iter()
                    .find(|(n, _)| n == ir_name)
                    .and_then(|(_, v)| v.as_f())
                    .ok_or_else(|| format!("{engine}: no f32 output `{ir_name}`"))?;
                compare(&format!("{engine} output `{onnx_name}`"), w, got, &c)?;
            }
        }
    }
    Ok(())
}

fn read_manifest() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(data_dir().join("manifest.txt")).expect("tests/data/manifest.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(n, s)| (n.to_string(), s.to_string())))
        .collect()
}

fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        line.chars().take(200).collect::<String>() + "…"
    } else {
        line
    }
}

#[test]
fn onnx_backend_cases_match_the_manifest() {
    let manifest = read_manifest();
    assert!(
        manifest.len() > 100,
        "the manifest lists only {} cases",
        manifest.len()
    );
    let bless = std::env::var_os("KILN_ONNX_BLESS").is_some();
    let mut statuses = BTreeMap::new();
    let mut drift = Vec::new();
    for (name, recorded) in &manifest {
        let dir = data_dir().join(name);
        assert!(
            dir.join("model.onnx").exists(),
            "{name}: listed in the manifest but missing"
        );
        let result = std::panic::catch_unwind(|| run_case(&dir)).unwrap_or_else(|_| Err("panicked".into()));
        let status = match &result {
            Ok(()) => "pass".to_string(),
            Err(e) => format!("skip: {}", one_line(e)),
        };
        let recorded_pass = recorded == "pass";
        if status.starts_with("skip: ") && status.contains("panicked") {
            drift.push(format!("{name}: PANIC (never acceptable)"));
        } else if recorded_pass != result.is_ok() || recorded == "new" {
            drift.push(format!("{name}: manifest says `{recorded}`, now `{status}`"));
        }
        statuses.insert(name.clone(), status);
    }
    if bless {
        let mut text = String::new();
        let old = std::fs::read_to_string(data_dir().join("manifest.txt")).unwrap_or_default();
        for l in old.lines().take_while(|l| l.starts_with('#')) {
            text += l;
            text += "\n";
        }
        for (n, s) in &statuses {
            text += &format!("{n} {s}\n");
        }
        std::fs::write(data_dir().join("manifest.txt"), text).expect("write manifest");
        return;
    }
    let passed = statuses.values().filter(|s| *s == "pass").count();
    eprintln!("{passed} of {} ONNX cases pass", statuses.len());
    assert!(
        drift.is_empty(),
        "{} cases drifted from tests/data/manifest.txt:\n{}",
        drift.len(),
        drift.join("\n")
    );
}

/// `OnnxModel::inputs` and `outputs` on every case that imports: each file input that is fed
/// maps to its own `Input` node, each file output (in the file's order) to a graph output, so
/// that a caller can feed and read every case by the file's own names.
#[test]
fn every_case_maps_its_file_names_to_nodes() {
    let (mut checked, mut renamed) = (0, 0);
    for (name, status) in read_manifest() {
        if status != "pass" {
            continue;
        }
        let dir = data_dir().join(&name);
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        let fed = fed_inputs(&bytes).unwrap();
        let Ok(model) = kiln_onnx::load_bytes(&bytes, None) else {
            continue; // integer inputs or clip bounds: imported only when bound
        };
        let g = &model.graph;
        let got: Vec<&String> = model.inputs.iter().map(|(f, _)| f).collect();
        assert_eq!(got, fed.iter().collect::<Vec<_>>(), "{name}: inputs");
        let mut nodes = std::collections::HashSet::new();
        for (file, node) in &model.inputs {
            let id = g
                .find(node)
                .unwrap_or_else(|| panic!("{name}: `{file}` → no node `{node}`"));
            assert!(matches!(g.node(id).op, kiln_ir::Op::Input(_)), "{name}: `{file}`");
            assert!(nodes.insert(id), "{name}: two inputs share node `{node}`");
        }
        let m = <kiln_onnx::proto::ModelProto as prost::Message>::decode(&bytes[..]).unwrap();
        let outs: Vec<String> = m.graph.unwrap().output.into_iter().map(|o| o.name).collect();
        let got: Vec<&String> = model.outputs.iter().map(|(f, _)| f).collect();
        assert_eq!(got, outs.iter().collect::<Vec<_>>(), "{name}: outputs");
        for (file, node) in &model.outputs {
            let id = g
                .find(node)
                .unwrap_or_else(|| panic!("{name}: `{file}` → no node `{node}`"));
            assert!(
                g.outputs().contains(&id),
                "{name}: `{file}` → `{node}` is no graph output"
            );
        }
        checked += 1;
        let pairs = model.inputs.iter().chain(&model.outputs);
        renamed += usize::from(pairs.into_iter().any(|(f, n)| f != n));
    }
    eprintln!("{checked} cases map their names; {renamed} of them rename an input or output");
    assert!(checked > 150, "only {checked} cases imported");
}
