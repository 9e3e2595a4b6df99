//! The `kiln` binary, run as a user runs it: exit codes, totals lines, and errors that say
//! what and where.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

fn temp_file(name: &str, contents: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn summary_of_lenet5_prints_the_published_totals() {
    let o = kiln(&["summary", &repo("examples/models/lenet5.kiln")]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().any(|l| l.trim() == "Total params: 61706"), "{out}");
    assert!(
        out.lines().any(|l| l.trim().starts_with("Total FLOPs: ")),
        "{out}"
    );
    assert!(out.contains("conv1"), "the table names the layers: {out}");
}

#[test]
fn summary_of_resnet18_prints_the_published_params() {
    let o = kiln(&["summary", &repo("examples/models/resnet18.kiln")]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l.trim() == "Total params: 11689512"));
}

#[test]
fn malformed_text_names_file_line_and_column() {
    let f = temp_file(
        "bad_syntax.kiln",
        b"graph g {\n  input %x: f32[1, 3]\n  %y = relu(%x\n  output %y\n}\n",
    );
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("{f}:4:3")), "{err}");
    assert!(err.contains("expected `,` or `)`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn invalid_graph_names_node_op_and_shapes() {
    let src = b"graph g {\n  input %x: f32[1, 3, 8, 8]\n  param %w: f32[4, 2, 3, 3]\n  %c = conv2d(%x, %w)\n  output %c\n}\n";
    let f = temp_file("bad_graph.kiln", src);
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("`c`") && err.contains("conv2d"), "{err}");
    assert!(
        err.contains("f32[1, 3, 8, 8]") && err.contains("f32[4, 2, 3, 3]"),
        "{err}"
    );
}

#[test]
fn missing_file_binary_file_and_unknown_format_are_clear_errors() {
    let o = kiln(&["summary", "/nonexistent/model.kiln"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read `/nonexistent/model.kiln`"),
        "{}",
        stderr(&o)
    );

    let f = temp_file("binary.kiln", &[0xff, 0xfe, 0x00, 0x01]);
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not UTF-8"), "{}", stderr(&o));

    let f = temp_file("model.txt", b"graph g {}");
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown model format"), "{}", stderr(&o));
}

#[test]
fn compile_emit_ir_round_trips() {
    let o = kiln(&["compile", &repo("examples/models/lenet5.kiln"), "--emit", "ir"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let printed = stdout(&o);
    let again = kiln_ir::text::parse(&printed).expect("printed IR parses");
    assert_eq!(kiln_ir::text::print(&again), printed);
}

#[test]
fn help_lists_the_commands() {
    let o = kiln(&["--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("summary") && out.contains("compile"), "{out}");
}
