//! The embedding API refuses bad feeds with errors that name what is wrong.

use kiln::ir::{Tensor, Value, text};
use kiln::{CompileOptions, compile};
use std::collections::HashMap;

fn model() -> (kiln::Model, kiln::Graph) {
    let g = text::parse(
        "graph g {
  input %x: f32[2, 3]
  input %t: i32[2]
  param %w: f32[4, 3]
  %y = dense(%x, %w)
  %loss = cross_entropy_loss(%y, %t)
  output %loss
}",
    )
    .unwrap();
    (compile(&g, &CompileOptions::default()).unwrap(), g)
}

fn feeds(t: Vec<i32>) -> HashMap<String, Value<f32>> {
    HashMap::from([
        ("x".to_string(), Value::F(Tensor::full([2, 3], 0.5))),
        ("t".to_string(), Value::I(Tensor::new([2], t).unwrap())),
    ])
}

#[test]
fn weights_must_exist_and_fit() {
    let (mut m, _) = model();
    let e = m.set_weights(&HashMap::new()).unwrap_err().to_string();
    assert_eq!(e, "missing weight `w`");
    let e = m
        .set_weights(&HashMap::from([("w".to_string(), Tensor::full([3, 4], 1.0))]))
        .unwrap_err();
    assert_eq!(e.to_string(), "`w`: expected f32[4, 3], got f32[3, 4]");
}

#[test]
fn inputs_must_exist_fit_and_be_known() {
    let (mut m, _) = model();
    m.set_weights(&HashMap::from([("w".to_string(), Tensor::full([4, 3], 1.0))]))
        .unwrap();
    assert!(m.run(&feeds(vec![0, 3])).is_ok());
    let mut f = feeds(vec![0, 1]);
    f.remove("t");
    assert_eq!(
        m.run(&f).unwrap_err().to_string(),
        "missing input `t` (expected i32[2]); inputs given: `x`"
    );
    let mut f = feeds(vec![0, 1]);
    f.insert("z".into(), Value::F(Tensor::full([1], 0.0)));
    assert!(
        m.run(&f)
            .unwrap_err()
            .to_string()
            .starts_with("unknown input `z`: the graph's inputs are `t`, `x`")
    );
    let mut f = feeds(vec![0, 1]);
    f.insert("t".into(), Value::F(Tensor::full([2], 0.0)));
    assert_eq!(
        m.run(&f).unwrap_err().to_string(),
        "input `t`: expected i32[2], got f32[2]"
    );
    let e = m.run(&feeds(vec![0, 4])).unwrap_err().to_string();
    assert_eq!(e, "`t`: class id 4 at position 1 is outside 0..4");
    let e = m.run(&feeds(vec![-1, 0])).unwrap_err().to_string();
    assert_eq!(e, "`t`: class id -1 at position 0 is outside 0..4");
}

/// A compiled model run before its weights are set is an error, not zeros.
#[test]
fn run_before_set_weights_is_an_error() {
    let (mut m, _) = model();
    let e = m.run(&feeds(vec![0, 1])).unwrap_err().to_string();
    assert_eq!(e, "the model's weights are not set: call set_weights before run");
    assert!(m.set_weights(&HashMap::new()).is_err());
    assert!(
        m.run(&feeds(vec![0, 1])).is_err(),
        "a failed set_weights sets none"
    );
    m.set_weights(&HashMap::from([("w".to_string(), Tensor::full([4, 3], 1.0))]))
        .unwrap();
    assert!(m.run(&feeds(vec![0, 1])).is_ok());
}

/// A `.kiln` file far bigger than any text model, or not a regular file, is refused before it
/// is read (a sparse file: nothing is written to disk).
#[test]
fn huge_or_special_text_files_are_refused_unread() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-model-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.kiln");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(kiln::model::MAX_TEXT_BYTES + 1).unwrap();
    drop(f);
    let e = kiln::model::load(&big).unwrap_err().to_string();
    assert!(e.contains("too big for a text model"), "{e}");
    let e = kiln::model::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("not a regular file") || e.contains("unknown model format"),
        "{e}"
    );
    #[cfg(unix)]
    {
        let zero = dir.join("zero.kiln");
        let _ = std::fs::remove_file(&zero);
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = kiln::model::load(&zero).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
