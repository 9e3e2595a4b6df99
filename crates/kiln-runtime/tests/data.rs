//! Data sets: the shipped digits file, IDX files written here byte by byte, every malformed
//! input as an error that names the file and the line or byte offset, the seeded shuffle, the
//! split and the batches.

use flate2::Compression;
use flate2::write::GzEncoder;
use kiln_ir::Tensor;
use kiln_runtime::data::{DataError, Dataset, Remainder, load_digits_csv_gz, load_idx, permutation};
use std::io::Write;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-data-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn digits_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/digits.csv.gz")
}

/// An IDX file of unsigned bytes, as MNIST's are laid out: 00 00 08 NDIMS, dims big-endian, data.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

#[test]
fn the_shipped_digits_file_has_1797_images_of_8x8_in_ten_classes() {
    let d = load_digits_csv_gz(&digits_path()).unwrap();
    assert_eq!(d.images().dims(), [1797, 1, 8, 8]);
    assert_eq!(d.labels().dims(), [1797]);
    assert_eq!(d.classes(), 10);
    // The first row of the file (`zcat digits.csv.gz | head -1`) begins 0,0,5,13,9,1 and ends
    // with label 0; the second ends with label 1.
    assert_eq!(
        &d.images().data()[..6],
        &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0, 9.0 / 16.0, 1.0 / 16.0]
    );
    assert_eq!(&d.labels().data()[..2], &[0, 1]);
    // UCI's test part: every class between 174 and 183 times.
    for c in 0..10 {
        let count = d.labels().data().iter().filter(|&&l| l == c).count();
        assert!((174..=183).contains(&count), "class {c}: {count}");
    }
    assert!(d.images().data().iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert!(d.images().data().contains(&1.0), "16 scales to 1");
}

#[test]
fn digits_split_is_1437_and_360_and_the_same_for_the_same_seed() {
    let d = load_digits_csv_gz(&digits_path()).unwrap();
    let (train, test) = d.train_test_split(0).unwrap();
    assert_eq!((train.len(), test.len()), (1437, 360));
    let (train2, test2) = d.train_test_split(0).unwrap();
    assert_eq!((&train, &test), (&train2, &test2));
    let (train3, _) = d.train_test_split(1).unwrap();
    assert_ne!(train, train3, "another seed, another split");
    // The split is a partition: each class count of the whole is train's plus test's.
    for c in 0..10 {
        let count = |s: &Dataset| s.labels().data().iter().filter(|&&l| l == c).count();
        assert_eq!(count(&d), count(&train) + count(&test), "class {c}");
    }
}

#[test]
fn plain_and_gzip_csv_read_alike_and_float_spellings_are_accepted() {
    let mut row: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
    row.push("7".into());
    let mut row2: Vec<String> = (0..64).map(|_| "16.0".to_string()).collect();
    row2.push("3.0".into());
    let text = format!("{}\n{}\n", row.join(","), row2.join(", "));
    let plain = load_digits_csv_gz(&write("plain.csv", text.as_bytes())).unwrap();
    let gz = load_digits_csv_gz(&write("small.csv.gz", &gzip(text.as_bytes()))).unwrap();
    assert_eq!(plain, gz);
    assert_eq!(plain.labels().data(), [7, 3]);
    assert_eq!(plain.images().data()[16], 16.0 / 16.0);
    assert_eq!(plain.images().data()[17], 0.0);
    assert!(plain.images().data()[64..].iter().all(|&p| p == 1.0));
}

#[test]
fn malformed_csv_names_the_file_and_the_line() {
    let good: Vec<String> = (0..65).map(|_| "1".to_string()).collect();
    let good = good.join(",");
    let cases: [(&str, String, &str); 6] = [
        (
            "short row",
            format!("{good}\n1,2,3\n"),
            "line 2: expected 65 comma-separated values",
        ),
        (
            "non-number",
            format!("{good}\n{good}\n{}", good.replacen('1', "x", 1)),
            "line 3: value 1 (`x`) is not a number",
        ),
        (
            "label out of range",
            format!("{}10\n", &good[..good.len() - 1]),
            "line 1: value 65 (`10`): a label",
        ),
        (
            "pixel out of range",
            format!("17{}\n", &good[1..]),
            "line 1: value 1 (`17`): a pixel",
        ),
        (
            "negative pixel",
            format!("-1{}\n", &good[1..]),
            "line 1: value 1 (`-1`)",
        ),
        ("empty", String::new(), "line 1: the file holds no rows"),
    ];
    for (what, text, want) in cases {
        let p = write(&format!("bad-{}.csv", what.replace(' ', "-")), text.as_bytes());
        let e = err_text(load_digits_csv_gz(&p).unwrap_err());
        assert!(
            e.contains(&p.display().to_string()) && e.contains(want),
            "{what}: {e}"
        );
    }
    let mut latin1 = format!("{good}\n").into_bytes();
    latin1.extend(b"\xff\n");
    let p = write("latin1.csv", &latin1);
    let e = err_text(load_digits_csv_gz(&p).unwrap_err());
    assert!(e.contains("line 2: not UTF-8"), "{e}");
    // A line without an end is refused at the line limit, not read whole.
    let p = write("one-long-line.csv", &gzip(&vec![b'1'; 1 << 20]));
    let e = err_text(load_digits_csv_gz(&p).unwrap_err());
    assert!(
        e.contains("line 1: the line is longer than the limit of 4096 bytes"),
        "{e}"
    );
}

#[test]
fn truncated_gzip_and_missing_files_are_errors() {
    let gz = gzip(b"1,2,3\n".repeat(100).as_slice());
    let p = write("truncated.csv.gz", &gz[..gz.len() / 2]);
    let e = err_text(load_digits_csv_gz(&p).unwrap_err());
    assert!(
        e.contains("truncated.csv.gz") && e.contains("gzip") && e.contains("truncated"),
        "{e}"
    );
    let e = err_text(load_digits_csv_gz(Path::new("/nonexistent/digits.csv.gz")).unwrap_err());
    assert!(e.contains("cannot read `/nonexistent/digits.csv.gz`"), "{e}");
}

#[test]
fn idx_files_written_here_load_plain_and_gzipped() {
    // Three 2×3 images with pixels 0, 10, …, 170, and labels 2, 0, 1.
    let pixels: Vec<u8> = (0..18).map(|i| i * 10).collect();
    let images = idx_bytes(&[3, 2, 3], &pixels);
    let labels = idx_bytes(&[3], &[2, 0, 1]);
    let d = load_idx(&write("img.idx", &images), &write("lab.idx", &labels)).unwrap();
    assert_eq!(d.images().dims(), [3, 1, 2, 3]);
    assert_eq!(d.labels().data(), [2, 0, 1]);
    assert_eq!(d.classes(), 3, "the largest label plus one");
    assert_eq!(d.images().data()[1], 10.0 / 255.0);
    assert_eq!(d.images().data()[17], 170.0 / 255.0);
    let gz = load_idx(
        &write("img.idx.gz", &gzip(&images)),
        &write("lab.idx.gz", &gzip(&labels)),
    )
    .unwrap();
    assert_eq!(d, gz);
}

#[test]
fn malformed_idx_names_the_file_and_the_byte_offset() {
    let labels = write("ok-labels.idx", &idx_bytes(&[2], &[0, 1]));
    let images = idx_bytes(&[2, 2, 2], &[0; 8]);
    let mut float_images = images.clone();
    float_images[2] = 0x0D;
    let mut bad_magic = images.clone();
    bad_magic[0] = 0x01;
    let mut trailing = images.clone();
    trailing.push(9);
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "bad-magic",
            bad_magic,
            "byte offset 0: bad magic number 01 00 08 03",
        ),
        ("float", float_images, "byte offset 2: element type 0x0d (f32)"),
        (
            "rank",
            idx_bytes(&[2, 4], &[0; 8]),
            "byte offset 3: 2 dims, but images have 3",
        ),
        (
            "tiny",
            vec![0, 0],
            "byte offset 2: the file ends inside the 4-byte IDX magic",
        ),
        (
            "header",
            idx_bytes(&[2, 2, 2], &[])[..9].to_vec(),
            "byte offset 9: the file ends inside the header",
        ),
        (
            "truncated",
            images[..images.len() - 3].to_vec(),
            "byte offset 21: truncated: dims [2, 2, 2] need 8 bytes",
        ),
        (
            "trailing",
            trailing,
            "byte offset 24: 1 bytes after the end of the data",
        ),
    ];
    for (what, bytes, want) in cases {
        let p = write(&format!("bad-{what}.idx"), &bytes);
        let e = err_text(load_idx(&p, &labels).unwrap_err());
        assert!(
            e.contains(&format!("`{}`", p.display())) && e.contains(want),
            "{what}: {e}"
        );
    }
    // Dims whose product overflows usize are an error before anything is allocated.
    let p = write("huge.idx", &idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[]));
    let e = err_text(load_idx(&p, &labels).unwrap_err());
    assert!(e.contains("huge.idx") && e.contains("above the limit"), "{e}");
    // Images and labels of different counts.
    let img = write("three.idx", &idx_bytes(&[3, 1, 1], &[1, 2, 3]));
    let e = err_text(load_idx(&img, &labels).unwrap_err());
    assert!(e.contains("holds 3 images") && e.contains("2 labels"), "{e}");
    // Labels with the wrong rank name the labels file.
    let lab2 = write("labels-2d.idx", &idx_bytes(&[1, 2], &[0, 1]));
    let img2 = write("two.idx", &idx_bytes(&[2, 1, 1], &[1, 2]));
    let e = err_text(load_idx(&img2, &lab2).unwrap_err());
    assert!(
        e.contains("labels-2d.idx") && e.contains("2 dims, but labels have 1"),
        "{e}"
    );
}

#[test]
fn dataset_new_rejects_bad_shapes_and_labels() {
    let img = |n: usize| Tensor::new([n, 1, 1, 1], vec![0.0; n]).unwrap();
    let e = err_text(Dataset::new(img(2), Tensor::new([2], vec![0, 3]).unwrap(), 3).unwrap_err());
    assert!(e.contains("label 3 of row 1 is not a class id in 0..3"), "{e}");
    let e = err_text(Dataset::new(img(2), Tensor::new([2], vec![-1, 0]).unwrap(), 3).unwrap_err());
    assert!(e.contains("label -1 of row 0"), "{e}");
    let e = err_text(Dataset::new(img(2), Tensor::new([3], vec![0, 0, 0]).unwrap(), 3).unwrap_err());
    assert!(e.contains("[2, 1, 1, 1]") && e.contains("[3]"), "{e}");
}

/// Ten 1×1 images whose pixel is their row number, label row % 3.
fn counting(n: usize) -> Dataset {
    Dataset::new(
        Tensor::new([n, 1, 1, 1], (0..n).map(|i| i as f32).collect()).unwrap(),
        Tensor::new([n], (0..n).map(|i| (i % 3) as i32).collect()).unwrap(),
        3,
    )
    .unwrap()
}

#[test]
fn permutation_is_seeded_and_a_permutation() {
    let p = permutation(100, 7);
    assert_eq!(p, permutation(100, 7));
    assert_ne!(p, permutation(100, 8));
    assert_ne!(p, (0..100).collect::<Vec<_>>());
    let mut sorted = p.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert!(permutation(0, 1).is_empty());
    // The rows travel with their labels.
    let d = counting(10).shuffled(3);
    for (x, l) in d.images().data().iter().zip(d.labels().data()) {
        assert_eq!(*x as i32 % 3, *l);
    }
}

#[test]
fn split_takes_the_ceiling_for_the_test_set_and_rejects_bad_fractions() {
    let (a, b) = counting(10).split(0.25).unwrap();
    assert_eq!(a.images().data(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(b.images().data(), [7.0, 8.0, 9.0]);
    for f in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(counting(10).split(f).is_err(), "{f}");
    }
    let picked = counting(10).select(&[3, 3, 0]).unwrap();
    assert_eq!(picked.images().data(), [3.0, 3.0, 0.0]);
    assert_eq!(picked.labels().data(), [0, 0, 0]);
    let e = err_text(counting(10).select(&[2, 10]).unwrap_err());
    assert!(
        e.contains("row 10 is out of range for a data set of 10 images"),
        "{e}"
    );
    let e = err_text(counting(1).split(0.5).unwrap_err());
    assert!(e.contains("cannot split 1 images"), "{e}");
}

#[test]
fn batches_drop_or_pad_the_remainder_and_follow_the_order() {
    let d = counting(10);
    let pixels = |b: &kiln_runtime::data::Batch| b.images.data().to_vec();
    let dropped: Vec<_> = d.batches(4, None, Remainder::Drop).unwrap().collect();
    assert_eq!(dropped.len(), 2);
    assert_eq!(pixels(&dropped[1]), [4.0, 5.0, 6.0, 7.0]);
    assert!(dropped.iter().all(|b| b.rows == 4 && b.labels.dims() == [4]));
    let padded: Vec<_> = d.batches(4, None, Remainder::Pad).unwrap().collect();
    assert_eq!(padded.len(), 3);
    assert_eq!(padded[2].rows, 2);
    assert_eq!(pixels(&padded[2]), [8.0, 9.0, 0.0, 0.0]);
    assert_eq!(padded[2].images.dims(), [4, 1, 1, 1]);
    let order = [9, 0, 5, 1, 2, 3, 4, 6, 7, 8];
    let b: Vec<_> = d.batches(3, Some(&order), Remainder::Drop).unwrap().collect();
    assert_eq!(b.len(), 3);
    assert_eq!(pixels(&b[0]), [9.0, 0.0, 5.0]);
    assert_eq!(b[0].labels.data(), [0, 0, 2]);
    // Exactly divisible: no padding batch.
    assert_eq!(d.batches(5, None, Remainder::Pad).unwrap().count(), 2);
    assert!(d.batches(0, None, Remainder::Pad).is_err());
    let e = err_text(d.batches(2, Some(&[0, 10]), Remainder::Pad).unwrap_err());
    assert!(e.contains("row 10 is out of range"), "{e}");
}

/// A gzip stream of `n` zero bytes after `prefix`, compressed as it is written (a bomb: about
/// 1 KB per MB).
fn gzip_zeros(prefix: &[u8], n: usize) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(prefix).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        e.write_all(&chunk[..k]).unwrap();
        left -= k;
    }
    e.finish().unwrap()
}

/// Peak resident memory of this process (VmHWM), in bytes; `None` off Linux.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn gzip_bombs_stop_at_the_size_the_header_promises() {
    let labels = write("bomb-labels.idx", &idx_bytes(&[2], &[0, 1]));
    // A 2 × 2 × 2 image file followed by 256 MiB of zeros, about 250 KB compressed: an error
    // after reading 9 bytes of data, not after inflating the rest.
    let bomb = gzip_zeros(&idx_bytes(&[2, 2, 2], &[0; 8]), 256 << 20);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let p = write("bomb.idx.gz", &bomb);
    let before = peak_rss();
    let e = err_text(load_idx(&p, &labels).unwrap_err());
    assert!(
        e.contains("bomb.idx.gz") && e.contains("byte offset 24") && e.contains("after the end of the data"),
        "{e}"
    );
    if let (Some(a), Some(b)) = (before, peak_rss()) {
        assert!(b < a + (64 << 20), "peak memory grew from {a} to {b} bytes");
    }
    // A header that promises more than the limits is refused before any data is read.
    let p = write(
        "promise.idx.gz",
        &gzip_zeros(&idx_bytes(&[1 << 16, 1 << 16, 1], &[]), 1 << 20),
    );
    let e = err_text(load_idx(&p, &labels).unwrap_err());
    assert!(
        e.contains("promise.idx.gz") && e.contains("byte offset 4") && e.contains("above the limit"),
        "{e}"
    );
    // Too little data in a gzip file: truncated, with the offset in the decompressed bytes.
    let p = write("short.idx.gz", &gzip(&idx_bytes(&[2, 2, 2], &[0; 5])));
    let e = err_text(load_idx(&p, &labels).unwrap_err());
    assert!(e.contains("byte offset 21: truncated"), "{e}");
}

#[test]
fn a_csv_bomb_stops_at_the_documented_limit() {
    // One valid row, then 1.06 GiB of blank lines as 1100 gzip members of 0.98 MiB each (a
    // member compresses to about 1 KB): refused once 1 GiB + 1 byte has been inflated, in
    // bounded memory (the text is parsed line by line).
    let row = format!("{}0\n", "0,".repeat(64));
    let blanks = gzip(&b"                                                              \n".repeat(1 << 14));
    let mut bomb = gzip(row.as_bytes());
    for _ in 0..1100 {
        bomb.extend(&blanks);
    }
    assert!(bomb.len() < 8 << 20, "{}", bomb.len());
    let p = write("bomb.csv.gz", &bomb);
    let before = peak_rss();
    let err = err_text(load_digits_csv_gz(&p).unwrap_err());
    assert!(
        err.contains("bomb.csv.gz") && err.contains("limit of 1073741824 bytes (1 GiB)"),
        "{err}"
    );
    if let (Some(a), Some(b)) = (before, peak_rss()) {
        assert!(b < a + (64 << 20), "peak memory grew from {a} to {b} bytes");
    }
}

#[test]
fn batches_larger_than_the_limits_are_refused() {
    let d = Dataset::new(
        Tensor::new([2, 1, 8, 8], vec![0.0; 128]).unwrap(),
        Tensor::new([2], vec![0, 1]).unwrap(),
        2,
    )
    .unwrap();
    let e = d.batches(1 << 40, None, Remainder::Pad).unwrap_err().to_string();
    assert!(
        e.contains("a batch of 1099511627776 images") && e.contains("limit"),
        "{e}"
    );
    assert!(d.batches(0, None, Remainder::Pad).is_err());
}
