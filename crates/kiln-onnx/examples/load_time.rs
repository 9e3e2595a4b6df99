//! Times `kiln_onnx::load` on a file: the median and the minimum of N loads, in ms.
//!
//! `cargo run --release -p kiln-onnx --example load_time -- model.onnx [N]` (pin it with
//! `taskset -c 1` on a shared machine).

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: load_time MODEL.onnx [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(11).max(1);
    let mut ms = Vec::with_capacity(runs);
    let mut summary = String::new();
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let model = match kiln_onnx::load(&path) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        };
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let bytes: usize = model.weights.values().map(|w| w.data().len() * 4).sum();
        summary = format!(
            "{} nodes, {} weights ({bytes} bytes)",
            model.graph.len(),
            model.weights.len()
        );
        drop(model);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{path}: {summary}; {runs} loads, median {:.2} ms, min {:.2} ms",
        ms[runs / 2],
        ms[0]
    );
}
