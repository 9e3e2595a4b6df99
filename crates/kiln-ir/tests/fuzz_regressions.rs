//! Inputs that once crashed a fuzz target (see docs/fuzzing.md), kept as regression tests.
//! Each runs through what the target checks: the parser must return (an `Err` here) without
//! panicking, and whatever parses must round-trip.

use kiln_ir::text;

/// What `fuzz/fuzz_targets/parse_text.rs` does with its input.
fn parse_text_target(data: &[u8]) -> Option<String> {
    let src = String::from_utf8_lossy(data);
    match text::parse(&src) {
        Ok(g) => {
            let printed = text::print(&g);
            let back = text::parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
            assert_eq!(back, g);
            assert_eq!(text::print(&back), printed);
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

#[track_caller]
fn rejects(data: &[u8], needles: &[&str]) {
    let msg = parse_text_target(data).expect("the input must be rejected");
    for n in needles {
        assert!(msg.contains(n), "message does not mention `{n}`: {msg}");
    }
}

/// parse_text, crash-ea94c734d216fb19d21c77819dce47a516189692: a transposed convolution over an
/// input with an empty spatial axis computed `s·(n − 1)` with `n = 0` (subtract overflow in
/// `shape::conv_transpose2d`). The fuzzer's input, byte for byte.
#[test]
fn conv_transpose_over_an_empty_axis_crash() {
    let data = b"graph random {\n  input %x: f32[2, 5, 5, 0]\n  param %deconv_1.weight: f32[5, 5, 2, 2]\n  param %deconv_1.bias: f32[5]\n  %deconv_1 = conv_transpose2d(%x, %deconv_1.weight, %deconv_1.bias): f32[2, 5, 6, 2]\n  %dropout_2 = dropout(%deconv_1) {ratio=0.2\xff\xff3046875, seed=11005017385720625158}: f32[2, 5, 6, 2]\n  %sub_3 = sub(%dropout_2, %dropout_2): f32[2, 5, 6, 2]\n  param %conv_4.weight: f32[5, 1, 1, 1]\n  %conv_4 = conv2d(%sub_3, %conv_4.weight) {dilation=[2, 2], paddin\x00\x00\x00\x00\x00\x00\x00\x08pper, gr\x91\x8a\x8f\x83=5}: f32[2, 5, 6, 2]\n  %concat_5 = concat(%deconv_1) {axis=-2}: f32[2, 5, 6, 2]\n  output %conv_4\n  output A.mncat_5\n}\n";
    rejects(
        data,
        &[
            "<text>:5:3:",
            "node `deconv_1`",
            "input has an empty spatial axis 1",
        ],
    );
}

/// The same bug, minimized.
#[test]
fn conv_transpose_over_an_empty_axis() {
    rejects(
        b"graph g {\n input %x: f32[1, 1, 0, 3]\n param %w: f32[1, 1, 2, 2]\n %y = conv_transpose2d(%x, %w)\n output %y\n}",
        &["input has an empty spatial axis 0"],
    );
}

// Overflows of the same family, found by reading shape.rs while fixing the crash above (each
// panicked with "attempt to … with overflow" in debug builds and wrapped silently in release).

#[test]
fn absurd_sizes_are_errors_not_overflows() {
    let big = i64::MAX;
    let cases: Vec<(String, &str)> = vec![
        // dilation·(kernel − 1) + 1
        (
            format!(
                "input %x: f32[1, 1, 4, 4]\n param %w: f32[1, 1, 4, 4]\n %y = conv2d(%x, %w) {{dilation=[{big}, 1]}}"
            ),
            "dilation [9223372036854775807, 1] is above the limit",
        ),
        // n + padding
        (
            format!(
                "input %x: f32[1, 1, 4, 4]\n param %w: f32[1, 1, 3, 3]\n %y = conv2d(%x, %w) {{padding=[{big}, 0, {big}, 0]}}"
            ),
            "overflows",
        ),
        // same padding with a huge stride and dilation
        (
            format!(
                "input %x: f32[1, 1, 4, 4]\n %y = max_pool2d(%x) {{kernel=[4, 2], stride=[{big}, 1], dilation=[{big}, 1], padding=same_lower}}"
            ),
            "stride [9223372036854775807, 1] is above the limit",
        ),
        // stride·(n − 1) + extent + output_padding
        (
            format!(
                "input %x: f32[1, 1, 4, 4]\n param %w: f32[1, 1, 3, 3]\n %y = conv_transpose2d(%x, %w) {{stride=[{big}, 1], output_padding=[5, 0]}}"
            ),
            "stride [9223372036854775807, 1] is above the limit",
        ),
        // C_out/groups · groups
        (
            format!(
                "input %x: f32[1, {big}, 4, 4]\n param %w: f32[{big}, {big}, 1, 1]\n %y = conv_transpose2d(%x, %w) {{groups={big}}}"
            ),
            "above the limit",
        ),
        // a saturated kernel extent must not pass for a real one
        (
            format!(
                "input %x: f32[1, 1, 1, 4]\n param %w: f32[1, 1, 4, 1]\n %y = conv_transpose2d(%x, %w) {{dilation=[{big}, 1]}}"
            ),
            "dilation [9223372036854775807, 1] is above the limit",
        ),
        // padding crop
        (
            format!(
                "input %x: f32[1, 1, 4, 4]\n param %w: f32[1, 1, 3, 3]\n %y = conv_transpose2d(%x, %w) {{padding=[{big}, 0, {big}, 0]}}"
            ),
            "removes the whole output",
        ),
        // the product of a reshape's target dims
        (
            "input %x: f32[1]\n %y = reshape(%x) {shape=[4294967296, 4294967296, -1]}".into(),
            "too many elements",
        ),
        // an input above the size limits is refused where it is declared
        (
            format!("input %x: f32[{m}, {m}, 2]\n %y = flatten(%x)", m = u64::MAX),
            "above the limit",
        ),
        // concat's sum of two axes within the limit but not together
        (
            format!(
                "input %x: f32[{}, 1]\n %y = concat(%x, %x) {{axis=0}}",
                1u64 << 31
            ),
            "above the limit",
        ),
    ];
    for (body, needle) in cases {
        let src = format!("graph g {{\n {body}\n output %y\n}}\n");
        let msg = parse_text_target(src.as_bytes()).unwrap_or_else(|| panic!("must be rejected:\n{src}"));
        assert!(msg.contains(needle), "message does not mention `{needle}`: {msg}");
    }
}

/// `same` padding over an empty axis computed `⌈0/s⌉ − 1` (subtract overflow in
/// the old `shape::resolve_padding`); a sliding window over an empty axis is an error, not a panic.
#[test]
fn same_padding_over_an_empty_axis() {
    let src = b"graph g {\n input %x: f32[1, 1, 0, 4]\n param %w: f32[1, 1, 1, 1]\n %y = conv2d(%x, %w) {padding=same_upper}\n output %y\n}\n";
    let msg = parse_text_target(src).expect("rejected");
    assert!(msg.contains("empty spatial axis"), "{msg}");
}

/// A concat of two `i64::MAX`-sized axes had a dim above `i64::MAX` (the parser once rejected
/// its own printer's output). Such a dim is now above the size limits wherever it appears, and
/// the error says so rather than overflowing.
#[test]
fn dims_above_the_limits_are_refused_where_declared() {
    for d in [i64::MAX as u64, u64::MAX, (1u64 << 31) + 1] {
        let msg = text::parse(&format!("graph g {{\n input %x: f32[{d}]\n output %x\n}}"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("above the limit"), "{msg}");
    }
    assert!(text::parse("graph g {\n input %x: f32[2147483648]\n output %x\n}").is_ok());
}

// ---------------------------------------------------------------------------------------------
// Found by the extreme mode of `kiln_ir::random` (the `random_graph` target and the proptest
// `extreme_graphs_are_valid_or_clean_errors` in roundtrip.rs).

use kiln_ir::{Conv2d, Graph, Im2Col, Op, Pool2d, PoolKind, TensorType};

/// A graph that shape inference accepts must also round-trip through the text IR. Strides and
/// dilations of `u64::MAX − 1` or `u64::MAX` over an axis they do not move along (a 1-wide
/// kernel, one output position) were accepted, then printed as `-2` / `-1` (the printer wrote
/// the `usize` as an `i64`), which the parser refuses: "attribute `stride` must not be
/// negative, got -1". Either refusing such an attribute or printing it unsigned is a fix.
#[test]
fn usize_attributes_above_i64_max_round_trip_or_are_refused() {
    let huge = [u64::MAX as usize, u64::MAX as usize - 1, (1usize << 63) + 1];
    let mut accepted = Vec::new();
    for h in huge {
        let ops: Vec<(Op, bool)> = vec![
            (
                Op::Conv2d(Conv2d {
                    stride: [h, 1],
                    ..Default::default()
                }),
                true,
            ),
            (
                Op::Conv2d(Conv2d {
                    dilation: [1, h],
                    ..Default::default()
                }),
                true,
            ),
            (
                Op::Im2Col(Im2Col {
                    kernel: [1, 1],
                    stride: [h, 1],
                    dilation: [1, h],
                    padding: [0; 4],
                }),
                false,
            ),
            (
                Op::Pool2d(Pool2d {
                    stride: [h, h],
                    ..Pool2d::new(PoolKind::Max, [1, 1], [1, 1])
                }),
                false,
            ),
        ];
        for (op, weight) in ops {
            let mut g = Graph::new();
            g.name = "g".into();
            let x = g.input("x", TensorType::f32([1, 1, 4, 4])).unwrap();
            let mut ins = vec![x];
            if weight {
                ins.push(g.param("w", TensorType::f32([1, 1, 1, 1])).unwrap());
            }
            // Refused (now: "stride … is above the limit of 2147483648"): fine.
            let Ok(y) = g.add("y", op.clone(), &ins) else {
                continue;
            };
            g.mark_output(y).unwrap();
            let printed = text::print(&g);
            match text::parse(&printed) {
                Ok(back) => assert_eq!(back, g, "{printed}"),
                Err(e) => accepted.push(format!("{op:?}: {e}\n{printed}")),
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "accepted but printed text that does not parse:\n{}",
        accepted.join("\n")
    );
}
