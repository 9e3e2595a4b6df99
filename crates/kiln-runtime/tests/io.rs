//! `.npy` and safetensors files written here byte by byte: every malformed or hostile file is
//! an error that names the file and says what is wrong, before anything of the size the file
//! claims is allocated.

use kiln_ir::{Tensor, Value};
use kiln_runtime::io::{load_safetensors, read_npy, read_npy_type};
use std::path::PathBuf;

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-io-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A version 1.0 `.npy` file with the header dict `dict` (padded as NumPy pads it) and `data`.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    f.extend((h.len() as u16).to_le_bytes());
    f.extend(h.as_bytes());
    f.extend(data);
    f
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn npy_err(name: &str, bytes: &[u8]) -> String {
    let p = write(name, bytes);
    let e = read_npy(&p).unwrap_err().to_string();
    assert!(
        e.contains(&format!("`{}`", p.display())),
        "the error names the file: {e}"
    );
    e
}

#[test]
fn well_formed_npy_files_read() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let p = write(
        "ok.npy",
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &data,
        ),
    );
    let want = Value::F(Tensor::new([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap());
    assert_eq!(read_npy(&p).unwrap(), want);
    // double quotes, no trailing comma, keys in another order, Python 2's `6L`
    let p = write(
        "ok2.npy",
        &npy(
            r#"{"shape": (6L,), "fortran_order": False, "descr": "<f4"}"#,
            &data,
        ),
    );
    assert_eq!(
        read_npy(&p).unwrap(),
        Value::F(Tensor::new([6], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap())
    );
    // a scalar, and a Fortran-ordered vector (the same bytes as in C order)
    let p = write(
        "scalar.npy",
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
            &f32_bytes(&[7.0]),
        ),
    );
    assert_eq!(read_npy(&p).unwrap().shape().numel(), 1);
    let p = write(
        "fvec.npy",
        &npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 6), }",
            &data,
        ),
    );
    assert_eq!(read_npy(&p).unwrap().shape().dims(), [1, 6]);
    // version 2.0: a 4-byte header length
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    let h = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n";
    v2.extend((h.len() as u32).to_le_bytes());
    v2.extend(h.as_bytes());
    v2.extend(7i32.to_le_bytes());
    v2.extend((-1i32).to_le_bytes());
    let p = write("v2.npy", &v2);
    assert_eq!(
        read_npy(&p).unwrap(),
        Value::I(Tensor::new([2], vec![7, -1]).unwrap())
    );
}

#[test]
fn the_data_must_be_exactly_what_the_header_says() {
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    let mut data = f32_bytes(&[0.0; 6]);
    data.push(0);
    let e = npy_err("trailing.npy", &npy(dict, &data));
    assert!(e.contains("1 bytes after the end of the data"), "{e}");
    let p = write("typed.npy", &npy(dict, &f32_bytes(&[0.0; 6])));
    assert_eq!(read_npy_type(&p).unwrap(), kiln_ir::TensorType::f32([2, 3]));
    let e = npy_err("short.npy", &npy(dict, &f32_bytes(&[0.0; 5])));
    let p = write("short-typed.npy", &npy(dict, &f32_bytes(&[0.0; 5])));
    assert!(read_npy_type(&p).unwrap_err().to_string().contains("truncated"));
    assert!(
        e.contains("truncated") && e.contains("needs 24 bytes") && e.contains("has 20"),
        "{e}"
    );
    // a header that promises 4 GiB over a 100-byte file: refused before reading, at once
    let e = npy_err(
        "promise.npy",
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1024, 1024, 1024), }",
            &[0; 4],
        ),
    );
    assert!(e.contains("truncated") && e.contains("4294967296 bytes"), "{e}");
}

#[test]
fn shapes_beyond_the_limits_are_refused_before_anything_is_allocated() {
    let cases: [(&str, &str); 7] = [
        ("(4294967296, 4294967296)", "above the limit"),
        ("(18446744073709551615, 18446744073709551615)", "above the limit"),
        ("(99999999999999999999999,)", "above the limit"),
        ("(0, 18446744073709551615)", "above the limit"),
        (
            "(1, 1, 1, 1, 1, 1, 1, 1, 1)",
            "rank 9 is above the limit of 8 dims",
        ),
        ("(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)", "more than 8 dims"),
        ("(65536, 65536)", "above the limit"),
    ];
    for (i, (shape, want)) in cases.into_iter().enumerate() {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let e = npy_err(&format!("huge{i}.npy"), &npy(&dict, &[]));
        assert!(e.contains(want), "{shape}: {e}");
    }
}

#[test]
fn malformed_headers_say_what_is_wrong() {
    let cases: [(&str, Vec<u8>, &str); 12] = [
        ("magic", b"\x93NUMPX\x01\x00\x00\x00".to_vec(), "magic string"),
        (
            "version",
            b"\x93NUMPY\x09\x00\x00\x00".to_vec(),
            "format version 9.0",
        ),
        (
            "len",
            b"\x93NUMPY\x01\x00\x10".to_vec(),
            "ends inside the header length",
        ),
        (
            "cut",
            b"\x93NUMPY\x01\x00\x40\x00{'descr'".to_vec(),
            "ends inside the header (8 of 64 bytes)",
        ),
        (
            "toolong",
            {
                let mut f = b"\x93NUMPY\x02\x00".to_vec();
                f.extend(u32::MAX.to_le_bytes());
                f
            },
            "a header of 4294967295 bytes is above the limit of 65536",
        ),
        (
            "fortran",
            npy(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                &[0; 24],
            ),
            "Fortran-ordered arrays are not supported",
        ),
        (
            "bigendian",
            npy(
                "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                &[0; 8],
            ),
            "element type >f4; kiln reads float32",
        ),
        (
            "u8",
            npy(
                "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }",
                &[0; 2],
            ),
            "element type |u1",
        ),
        (
            "structured",
            npy(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
                &[0; 8],
            ),
            "structured dtype",
        ),
        (
            "missing",
            npy("{'descr': '<f4', 'shape': (2,), }", &[0; 8]),
            "no `fortran_order`",
        ),
        (
            "unknown",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                &[0; 8],
            ),
            "unknown key `x`",
        ),
        (
            "syntax",
            npy(
                "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }",
                &[0; 8],
            ),
            "expected True or False, found `M`",
        ),
    ];
    for (what, bytes, want) in cases {
        let e = npy_err(&format!("bad-{what}.npy"), &bytes);
        assert!(e.contains(want), "{what}: {e}");
    }
    let e = npy_err(
        "dup.npy",
        &npy(
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            &[0; 8],
        ),
    );
    assert!(e.contains("`descr` appears twice"), "{e}");
    let e = npy_err(
        "negdim.npy",
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
            &[0; 8],
        ),
    );
    assert!(e.contains("expected a dim"), "{e}");
    let mut big = Vec::new();
    big.extend((1i64 << 40).to_le_bytes());
    let e = npy_err(
        "bigint.npy",
        &npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,)}", &big),
    );
    assert!(
        e.contains("element 0: integer 1099511627776 does not fit in i32"),
        "{e}"
    );
}

/// A safetensors file: the 8-byte header length, the JSON header, the data.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend(header.as_bytes());
    f.extend(data);
    f
}

#[test]
fn safetensors_shapes_are_within_the_limits() {
    // zero elements, so safetensors itself accepts them, but a dim beyond any tensor's
    let p = write(
        "zero-huge.safetensors",
        &safetensors(
            r#"{"w":{"dtype":"F32","shape":[0,1099511627776],"data_offsets":[0,0]}}"#,
            &[],
        ),
    );
    let e = load_safetensors(&p).unwrap_err().to_string();
    assert!(
        e.contains("zero-huge.safetensors") && e.contains("tensor `w`") && e.contains("above the limit"),
        "{e}"
    );
    let p = write(
        "rank9.safetensors",
        &safetensors(
            r#"{"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
    );
    let e = load_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("tensor `w`") && e.contains("rank 9"), "{e}");
    let p = write(
        "i32.safetensors",
        &safetensors(
            r#"{"ids":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    let e = load_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("tensor `ids`") && e.contains("I32"), "{e}");
    // offsets past the data, and a header longer than the file
    let p = write(
        "past.safetensors",
        &safetensors(
            r#"{"w":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#,
            &[0; 8],
        ),
    );
    assert!(
        load_safetensors(&p)
            .unwrap_err()
            .to_string()
            .contains("past.safetensors")
    );
    let mut f = u64::MAX.to_le_bytes().to_vec();
    f.extend(b"{}");
    let p = write("hlen.safetensors", &f);
    assert!(
        load_safetensors(&p)
            .unwrap_err()
            .to_string()
            .contains("hlen.safetensors")
    );
    // a header that promises 4 GiB of data over an 8-byte file: refused before reading
    let p = write(
        "promise.safetensors",
        &safetensors(
            r#"{"w":{"dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]}}"#,
            &[0; 8],
        ),
    );
    let e = load_safetensors(&p).unwrap_err().to_string();
    assert!(
        e.contains("the header promises 4294967376 bytes in all, the file has 88"),
        "{e}"
    );
    // data that does not match the shape, JSON nested too deep, a device that never ends
    let p = write(
        "size.safetensors",
        &safetensors(
            r#"{"w":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    let e = load_safetensors(&p).unwrap_err().to_string();
    assert!(
        e.contains("tensor `w`: data_offsets [0, 8] do not hold the 16 bytes"),
        "{e}"
    );
    let deep = format!("{{\"w\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let p = write("deep.safetensors", &safetensors(&deep, &[]));
    let e = load_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("nests deeper than 32"), "{e}");
    if std::path::Path::new("/dev/zero").exists() {
        let e = load_safetensors(std::path::Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`/dev/zero`") && e.contains("expected a JSON value"),
            "{e}"
        );
    }
    // F64 becomes f32
    let p = write(
        "f64.safetensors",
        &safetensors(
            r#"{"b":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#,
            &[1.5f64.to_le_bytes(), (-2.0f64).to_le_bytes()].concat(),
        ),
    );
    assert_eq!(load_safetensors(&p).unwrap()["b"].data(), [1.5, -2.0]);
}
