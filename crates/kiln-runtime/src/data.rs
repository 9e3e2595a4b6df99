//! Labelled image data sets for training: the handwritten digits CSV that kiln ships
//! (`examples/data/digits.csv.gz`) and MNIST's IDX files, a seeded shuffle, the train/test split
//! and batches.
//!
//! A [`Dataset`] holds every image as one `[N, 1, H, W]` f32 tensor (pixels scaled to `[0, 1]`)
//! and the class ids as one `[N]` i32 tensor. Loading checks everything a file can get wrong and
//! says where: `path, line L` for CSV, `path, byte offset B` for IDX (an offset into the
//! decompressed bytes when the file is gzip-compressed).

#![forbid(unsafe_code)]

use kiln_ir::Tensor;
use kiln_ir::init::SplitMix64;
use std::io::Read;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("cannot read `{path}`: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("`{path}` is not a valid gzip file: {reason}")]
    Gzip { path: String, reason: String },
    #[error("`{path}`, line {line}: {reason}")]
    Csv {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("`{path}`, byte offset {offset}: {reason}")]
    Idx {
        path: String,
        offset: usize,
        reason: String,
    },
    /// A data set that is inconsistent in itself, or a request it cannot serve.
    #[error("{0}")]
    Invalid(String),
}

/// Labelled images: `images` is `[N, C, H, W]` (`C` = 1 for the digits and MNIST), `labels` is
/// `[N]` with every id in `0..classes`. The fields are private so that every data set holds
/// these invariants ([`Dataset::new`] checks them).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    images: Tensor<f32>,
    labels: Tensor<i32>,
    classes: usize,
}

/// One batch of rows gathered from a [`Dataset`]: `rows` of them are real, the rest (only with
/// [`Remainder::Pad`]) are zero images with label 0 that only fill the batch up.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Tensor<f32>,
    pub labels: Tensor<i32>,
    pub rows: usize,
}

/// What [`Dataset::batches`] does with the rows that do not fill a last batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remainder {
    /// Leave them out (training: every step sees a full batch).
    Drop,
    /// Yield them in a last batch filled up with padding rows (evaluation: every row counts).
    Pad,
}

impl Dataset {
    /// Checks the shapes (`[N, C, H, W]` images, `[N]` labels, the same N) and every label.
    pub fn new(images: Tensor<f32>, labels: Tensor<i32>, classes: usize) -> Result<Dataset, DataError> {
        let (idims, ldims) = (images.dims(), labels.dims());
        if idims.len() != 4 || ldims.len() != 1 || idims[0] != ldims[0] {
            return Err(DataError::Invalid(format!(
                "a data set needs images [N, C, H, W] and labels [N]; got images {} and labels {}",
                images.shape(),
                labels.shape()
            )));
        }
        if let Some((i, &l)) = labels
            .data()
            .iter()
            .enumerate()
            .find(|&(_, &l)| l < 0 || l as usize >= classes)
        {
            return Err(DataError::Invalid(format!(
                "label {l} of row {i} is not a class id in 0..{classes}"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            classes,
        })
    }

    /// All images, `[N, C, H, W]`.
    pub fn images(&self) -> &Tensor<f32> {
        &self.images
    }

    /// All labels, `[N]`.
    pub fn labels(&self) -> &Tensor<i32> {
        &self.labels
    }

    /// Number of classes: every label lies in `0..classes()`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `(images, labels, classes)`.
    pub fn into_parts(self) -> (Tensor<f32>, Tensor<i32>, usize) {
        (self.images, self.labels, self.classes)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of one image.
    pub fn image_dims(&self) -> [usize; 3] {
        let d = self.images.dims();
        [d[1], d[2], d[3]]
    }

    /// The rows `rows`, in that order (repeats allowed), as a new data set.
    pub fn select(&self, rows: &[usize]) -> Result<Dataset, DataError> {
        self.check_rows(rows)?;
        Ok(self.select_checked(rows))
    }

    fn select_checked(&self, rows: &[usize]) -> Dataset {
        let b = self.gather(rows, rows.len());
        Dataset {
            images: b.images,
            labels: b.labels,
            classes: self.classes,
        }
    }

    fn check_rows(&self, rows: &[usize]) -> Result<(), DataError> {
        match rows.iter().find(|&&i| i >= self.len()) {
            Some(bad) => Err(DataError::Invalid(format!(
                "row {bad} is out of range for a data set of {} images",
                self.len()
            ))),
            None => Ok(()),
        }
    }

    /// The same rows in the seeded order [`permutation`]`(len, seed)`.
    pub fn shuffled(&self, seed: u64) -> Dataset {
        self.select_checked(&permutation(self.len(), seed))
    }

    /// Splits off the last `ceil(len · test_fraction)` rows as the test set (as scikit-learn's
    /// `train_test_split` rounds): `(train, test)`. Shuffle first for a fair split.
    pub fn split(&self, test_fraction: f64) -> Result<(Dataset, Dataset), DataError> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(DataError::Invalid(format!(
                "the test fraction must lie strictly between 0 and 1, not {test_fraction}"
            )));
        }
        let n = self.len();
        let test = (n as f64 * test_fraction).ceil() as usize;
        if test == 0 || test >= n {
            return Err(DataError::Invalid(format!(
                "cannot split {n} images into a non-empty training and test set"
            )));
        }
        let rows: Vec<usize> = (0..n).collect();
        let (a, b) = rows.split_at(n - test);
        Ok((self.select_checked(a), self.select_checked(b)))
    }

    /// The seeded 80/20 split kiln's examples use: [`shuffled`](Self::shuffled) with `seed`, then
    /// [`split`](Self::split) with 0.2 (for the 1,797 digits: 1,437 to train, 360 to test).
    pub fn train_test_split(&self, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        self.shuffled(seed).split(0.2)
    }

    /// Batches of `batch_size` rows taken in `order` (every row index once, e.g. a
    /// [`permutation`]; `None`: `0..len()`). With [`Remainder::Drop`] a short last batch is left
    /// out; with [`Remainder::Pad`] it is filled up with padding rows.
    pub fn batches<'a>(
        &'a self,
        batch_size: usize,
        order: Option<&'a [usize]>,
        remainder: Remainder,
    ) -> Result<Batches<'a>, DataError> {
        if batch_size == 0 {
            return Err(DataError::Invalid("the batch size must be at least 1".into()));
        }
        let [c, h, w] = self.image_dims();
        kiln_ir::limits::check_dims(&[batch_size, c, h, w])
            .map_err(|e| DataError::Invalid(format!("a batch of {batch_size} images: {e}")))?;
        if let Some(o) = order {
            self.check_rows(o)?;
        }
        Ok(Batches {
            data: self,
            order,
            batch_size,
            remainder,
            pos: 0,
        })
    }

    /// The rows `rows` followed by `size − rows.len()` padding rows.
    fn gather(&self, rows: &[usize], size: usize) -> Batch {
        let [c, h, w] = self.image_dims();
        let per = c * h * w;
        let mut images = vec![0.0f32; size * per];
        let mut labels = vec![0i32; size];
        for (k, &r) in rows.iter().enumerate() {
            images[k * per..(k + 1) * per].copy_from_slice(&self.images.data()[r * per..(r + 1) * per]);
            labels[k] = self.labels.data()[r];
        }
        Batch {
            images: Tensor::new([size, c, h, w], images).expect("sized above"),
            labels: Tensor::new([size], labels).expect("sized above"),
            rows: rows.len(),
        }
    }
}

/// The iterator of [`Dataset::batches`].
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Option<&'a [usize]>,
    batch_size: usize,
    remainder: Remainder,
    pos: usize,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let n = self.order.map_or(self.data.len(), <[usize]>::len);
        let end = (self.pos + self.batch_size).min(n);
        if self.pos >= n || (end - self.pos < self.batch_size && self.remainder == Remainder::Drop) {
            return None;
        }
        let rows: Vec<usize> = match self.order {
            Some(o) => o[self.pos..end].to_vec(),
            None => (self.pos..end).collect(),
        };
        self.pos = end;
        Some(self.data.gather(&rows, self.batch_size))
    }
}

/// A seeded permutation of `0..n` (Fisher–Yates over SplitMix64): the same seed always gives
/// the same order, on every machine.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// The most bytes a digits CSV may hold (after decompression): 1 GiB, 8 million rows — the
/// shipped file is 0.5 MB. Reading stops one byte past it, so a gzip bomb never inflates
/// further; the text is parsed line by line as it is read, never held whole.
pub const MAX_CSV_BYTES: u64 = 1 << 30;

/// The longest line of a digits CSV: 4 KiB (a row of 65 values spelled `16.0` is 325 bytes).
pub const MAX_CSV_LINE: usize = 4096;

/// `src` gunzipped when it starts with gzip's magic number, else as it is.
fn maybe_gunzip<'a, R: std::io::BufRead + 'a>(mut src: R) -> std::io::Result<(Box<dyn Read + 'a>, bool)> {
    let gz = src.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        (Box::new(flate2::bufread::MultiGzDecoder::new(src)), true)
    } else {
        (Box::new(src), false)
    })
}

/// A reader of a data file (gunzipped when it is gzip) whose read errors name the file: a
/// failed read of the file is [`DataError::Read`], a bad compressed stream [`DataError::Gzip`].
struct Source<'a> {
    reader: Box<dyn Read + 'a>,
    gzip: bool,
    path: String,
    /// The length of a plain (not gzip) regular file.
    plain_len: Option<u64>,
}

impl<'a> Source<'a> {
    fn new(src: impl std::io::BufRead + 'a, path: &str) -> Result<Source<'a>, DataError> {
        let (reader, gzip) = maybe_gunzip(src).map_err(|error| DataError::Read {
            path: path.to_string(),
            error,
        })?;
        Ok(Source {
            reader,
            gzip,
            path: path.to_string(),
            plain_len: None,
        })
    }

    fn open(path: &Path) -> Result<Source<'static>, DataError> {
        let shown = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|error| DataError::Read {
            path: shown.clone(),
            error,
        })?;
        let len = f
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len());
        let mut src = Source::new(std::io::BufReader::new(f), &shown)?;
        src.plain_len = len.filter(|_| !src.gzip);
        Ok(src)
    }

    fn error(&self, e: std::io::Error) -> DataError {
        read_error(self.gzip, &self.path, e)
    }

    /// Fills `buf` up to the end of the stream; returns how many bytes were read.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let mut n = 0;
        while n < buf.len() {
            match self.reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        Ok(n)
    }

    /// At most `limit + 1` more bytes: the caller tells "exactly `limit`" from "more".
    fn read_at_most(&mut self, limit: u64) -> Result<Vec<u8>, DataError> {
        let mut out = Vec::new();
        crate::io::try_reserve(
            &mut out,
            usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX),
        )
        .map_err(|e| DataError::Invalid(format!("`{}`: {e}", self.path)))?;
        match (&mut self.reader)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
        {
            Ok(_) => Ok(out),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// A failed read of a data file: [`DataError::Gzip`] when it is gzip (a bad or truncated
/// compressed stream), else [`DataError::Read`].
fn read_error(gzip: bool, path: &str, e: std::io::Error) -> DataError {
    if gzip {
        DataError::Gzip {
            path: path.to_string(),
            reason: match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "the compressed stream is truncated".into(),
                _ => e.to_string(),
            },
        }
    } else {
        DataError::Read {
            path: path.to_string(),
            error: e,
        }
    }
}

/// The handwritten digits: a CSV (gzip-compressed or plain) of rows of 64 pixels of an 8×8
/// image, row-major, each in `0..=16`, then the label `0..=9` — the UCI data set as
/// scikit-learn ships it. Pixels are divided by 16; images are `[N, 1, 8, 8]`, 10 classes.
/// At most [`MAX_CSV_BYTES`] of text, lines of at most [`MAX_CSV_LINE`] bytes.
pub fn load_digits_csv_gz(path: &Path) -> Result<Dataset, DataError> {
    digits_from(Source::open(path)?)
}

/// [`load_digits_csv_gz`] of a file's bytes (gzip-compressed or plain); errors name `path`.
pub fn digits_from_bytes(bytes: &[u8], path: &str) -> Result<Dataset, DataError> {
    digits_from(Source::new(bytes, path)?)
}

fn digits_from(src: Source<'_>) -> Result<Dataset, DataError> {
    const PIXELS: usize = 64;
    let shown = src.path.clone();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut buf = Vec::new();
    let mut total: u64 = 0;
    let mut line = 0;
    let (gzip, path) = (src.gzip, src.path.clone());
    let mut reader = std::io::BufReader::new(src.reader);
    loop {
        line += 1;
        let bad = |reason: String| DataError::Csv {
            path: shown.clone(),
            line,
            reason,
        };
        buf.clear();
        let n =
            std::io::BufRead::read_until(&mut (&mut reader).take(MAX_CSV_LINE as u64 + 1), b'\n', &mut buf)
                .map_err(|e| read_error(gzip, &path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_CSV_BYTES {
            return Err(bad(format!(
                "the text is longer than the limit of {MAX_CSV_BYTES} bytes (1 GiB) for a digits CSV"
            )));
        }
        if n > MAX_CSV_LINE && buf.last() != Some(&b'\n') {
            return Err(bad(format!(
                "the line is longer than the limit of {MAX_CSV_LINE} bytes"
            )));
        }
        let row = std::str::from_utf8(&buf).map_err(|_| bad("not UTF-8 text".into()))?;
        let row = row.trim();
        if row.is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != PIXELS + 1 {
            return Err(bad(format!(
                "expected {} comma-separated values (64 pixels and the label), found {}",
                PIXELS + 1,
                fields.len()
            )));
        }
        for (col, f) in fields.iter().enumerate() {
            // Integers, or their float spelling (`3.0`) as some copies of the file have.
            let v: f64 = f
                .parse()
                .map_err(|_| bad(format!("value {} (`{f}`) is not a number", col + 1)))?;
            let (what, max) = if col < PIXELS {
                ("pixel", 16.0)
            } else {
                ("label", 9.0)
            };
            if !(v.fract() == 0.0 && (0.0..=max).contains(&v)) {
                return Err(bad(format!(
                    "value {} (`{f}`): a {what} must be an integer in 0..={max}",
                    col + 1
                )));
            }
            if col < PIXELS {
                images.push((v / 16.0) as f32);
            } else {
                labels.push(v as i32);
            }
        }
    }
    let n = labels.len();
    if n == 0 {
        return Err(DataError::Csv {
            path: shown,
            line: 1,
            reason: "the file holds no rows".into(),
        });
    }
    let invalid = || DataError::Invalid(format!("`{shown}`: {n} rows do not make a data set"));
    Dataset::new(
        Tensor::new([n, 1, 8, 8], images).map_err(|_| invalid())?,
        Tensor::new([n], labels).map_err(|_| invalid())?,
        10,
    )
}

/// An IDX file's dims and data.
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (`00 00 08 NDIMS`, NDIMS big-endian u32 dims, the data),
/// checking that it holds `ndims` dims and exactly as many bytes as they ask for. The header
/// is read first; the data it promises must be within [`kiln_ir::limits`], and at most one
/// byte more than that is read (or decompressed).
fn read_idx(path: &Path, ndims: usize, what: &str) -> Result<Idx, DataError> {
    let mut src = Source::open(path)?;
    let shown = src.path.clone();
    let bad = |offset: usize, reason: String| DataError::Idx {
        path: shown.clone(),
        offset,
        reason,
    };
    let mut magic = [0u8; 4];
    let n = src.read_up_to(&mut magic)?;
    if n < 4 {
        return Err(bad(
            n,
            format!("the file ends inside the 4-byte IDX magic number ({n} bytes)"),
        ));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(
            0,
            format!(
                "bad magic number {:02x} {:02x} {:02x} {:02x}: an IDX file starts with 00 00",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != 0x08 {
        let kind = match magic[2] {
            0x09 => "signed bytes",
            0x0B => "i16",
            0x0C => "i32",
            0x0D => "f32",
            0x0E => "f64",
            _ => "an unknown element type",
        };
        return Err(bad(
            2,
            format!(
                "element type 0x{:02x} ({kind}); kiln reads IDX files of unsigned bytes (0x08)",
                magic[2]
            ),
        ));
    }
    if magic[3] as usize != ndims {
        return Err(bad(
            3,
            format!("{} dims, but {what} have {ndims} in an IDX file", magic[3]),
        ));
    }
    let header = 4 + 4 * ndims;
    let mut raw = vec![0u8; 4 * ndims];
    let n = src.read_up_to(&mut raw)?;
    if n < raw.len() {
        return Err(bad(
            4 + n,
            format!("the file ends inside the header of {ndims} dims ({header} bytes)"),
        ));
    }
    let dims: Vec<usize> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let need = kiln_ir::limits::check_dims(&dims).map_err(|e| bad(4, format!("dims {dims:?}: {e}")))?;
    // a plain file's size is known before its data is read; gzip stops one byte past `need`
    let (have, data) = match src.plain_len {
        Some(len) if len != (header + need) as u64 => (len.saturating_sub(header as u64), None),
        _ => {
            let data = src.read_at_most(need as u64)?;
            (data.len() as u64, Some(data))
        }
    };
    let need64 = need as u64;
    let Some(data) = data.filter(|_| have == need64) else {
        let (offset, reason) = if have < need64 {
            (
                header + have as usize,
                format!(
                    "truncated: dims {dims:?} need {need} bytes of data after the header, the file has {have}"
                ),
            )
        } else {
            let extra = if src.gzip {
                "more bytes (decompression stopped there)".to_string()
            } else {
                format!("{} bytes", have - need64)
            };
            (
                header + need,
                format!("{extra} after the end of the data of dims {dims:?} ({need} bytes)"),
            )
        };
        return Err(bad(offset, reason));
    };
    Ok(Idx { dims, data })
}

/// MNIST-style IDX files (gzip-compressed or plain): images `[N, H, W]` of unsigned bytes,
/// scaled by 1/255 to `[N, 1, H, W]`, and labels `[N]`. The class count is the largest label
/// plus one (10 for MNIST), so every label is a class id.
pub fn load_idx(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images = read_idx(images_path, 3, "images")?;
    let labels = read_idx(labels_path, 1, "labels")?;
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(DataError::Invalid(format!(
            "`{}` holds {n} images but `{}` holds {} labels",
            images_path.display(),
            labels_path.display(),
            labels.dims[0]
        )));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(DataError::Idx {
            path: images_path.display().to_string(),
            offset: 4,
            reason: format!("no images (dims [{n}, {h}, {w}])"),
        });
    }
    let classes = usize::from(labels.data.iter().copied().max().unwrap_or(0)) + 1;
    let pixels = crate::io::try_collect(
        images.data.len(),
        images.data.iter().map(|&p| f32::from(p) / 255.0),
    )
    .map_err(|e| DataError::Invalid(format!("`{}`: {e}", images_path.display())))?;
    drop(images);
    let images = Tensor::new([n, 1, h, w], pixels);
    let labels = Tensor::new([n], labels.data.iter().map(|&l| i32::from(l)).collect());
    match (images, labels) {
        (Ok(i), Ok(l)) => Dataset::new(i, l, classes),
        _ => Err(DataError::Invalid(format!(
            "`{}`: the data does not fill dims [{n}, {h}, {w}]",
            images_path.display()
        ))),
    }
}
