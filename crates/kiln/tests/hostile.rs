//! Hostile input files through the `kiln` binary: "no memory corruption, hang, runaway
//! allocation or panic from any file a user passes in". Every file is generated here, into a
//! fresh temp folder, and run through each subcommand it applies to, with a wall-clock timeout
//! (a child still running after it is killed: "hang") and its address space capped at 8 GiB
//! (`prlimit --as`, or `setrlimit` before `exec` where `prlimit` is missing), so a runaway
//! allocation aborts instead of swapping. Each must end in a clean error: exit code 1 or 2 (not
//! a signal, not 101 — a panic), with stderr naming what is wrong. A few cases are warnings
//! instead: exit 0, stderr naming the problem.
//!
//! ONNX models are encoded by hand (a small protobuf writer below), `.npy` and safetensors
//! files too, so the files can be as broken as needed.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The address-space cap of every child: 8 GiB.
const MEMORY_LIMIT: u64 = 8 << 30;
/// The default wall-clock limit of one run.
const TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Running the binary

/// What one run of the binary did.
struct Outcome {
    /// The command line, for messages.
    what: String,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.and_then(|s| s.signal())
    }

    /// Why the run is not a clean end at all (hang, signal, panic), if it is not.
    fn crash(&self) -> Option<String> {
        let Some(_) = self.status else {
            return Some(format!("hang: still running after {:.0?}, killed", self.elapsed));
        };
        if let Some(sig) = self.signal() {
            let name = match sig {
                6 => "SIGABRT (an allocation failure aborts)",
                9 => "SIGKILL",
                11 => "SIGSEGV",
                7 => "SIGBUS",
                4 => "SIGILL",
                _ => "a signal",
            };
            return Some(format!("killed by signal {sig}, {name}"));
        }
        if self.code() == Some(101) || self.stderr.contains("panicked") {
            return Some("panic (exit code 101)".into());
        }
        None
    }

    fn describe(&self) -> String {
        let tail = |s: &str| {
            let s = s.trim();
            if s.len() > 1500 {
                let mut cut = s.len() - 1500;
                while !s.is_char_boundary(cut) {
                    cut += 1;
                }
                format!("…{}", &s[cut..])
            } else {
                s.to_string()
            }
        };
        format!(
            "`{}`: exit {:?}, signal {:?}, {:.1?}\n  stderr: {}\n  stdout: {}",
            self.what,
            self.code(),
            self.signal(),
            self.elapsed,
            tail(&self.stderr),
            tail(&self.stdout)
        )
    }
}

/// Whether `prlimit` (util-linux) runs here.
fn have_prlimit() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        Command::new("prlimit")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

unsafe extern "C" {
    fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
    fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

/// `RLIMIT_AS` on Linux.
const RLIMIT_AS: i32 = 9;

/// Runs the `kiln` binary with `args` in `dir` (the repository root when `None`), its output
/// in files (no pipe to fill), killed after `timeout`.
fn kiln_in(dir: &Path, args: &[OsString], timeout: Duration) -> Outcome {
    let bin = env!("CARGO_BIN_EXE_kiln");
    let what = format!(
        "kiln {}",
        args.iter()
            .map(|a| {
                let s = a.to_string_lossy();
                if s.len() > 120 {
                    format!("{}…", &s[..s.char_indices().nth(100).map_or(s.len(), |c| c.0)])
                } else {
                    s.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out_path = dir.join(format!("stdout-{}.txt", unique()));
    let err_path = dir.join(format!("stderr-{}.txt", unique()));
    let mut cmd = if have_prlimit() {
        let mut c = Command::new("prlimit");
        c.arg(format!("--as={MEMORY_LIMIT}")).arg("--").arg(bin);
        c
    } else {
        let mut c = Command::new(bin);
        // SAFETY: `setrlimit` is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            c.pre_exec(|| {
                let lim = [MEMORY_LIMIT, MEMORY_LIMIT];
                if setrlimit(RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    };
    cmd.args(args)
        .current_dir(repo_root())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let start = Instant::now();
    let mut child = cmd.spawn().expect("the kiln binary starts");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for kiln") {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let o = Outcome {
        what,
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
        elapsed,
    };
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    o
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn repo(path: &str) -> PathBuf {
    repo_root().join(path)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A fresh folder for one test's files, removed when the test passes.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "kiln-hostile-{}-{name}-{}",
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Collects the failures of one test's runs, to report them all at once.
struct Checks {
    dir: TempDir,
    failures: Vec<String>,
    runs: usize,
}

/// What a run must end in.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// Exit 1 or 2, stderr containing one of the phrases (case-insensitive).
    Error(&'a [&'a str]),
    /// Exit 0, stderr containing one of the phrases.
    Warning(&'a [&'a str]),
    /// Exit 0, or a clean error naming one of the phrases.
    OkOrError(&'a [&'a str]),
}

fn arg(s: impl Into<OsString>) -> OsString {
    s.into()
}

impl Checks {
    fn new(name: &str) -> Checks {
        Checks {
            dir: TempDir::new(name),
            failures: Vec::new(),
            runs: 0,
        }
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        self.dir.write(name, bytes)
    }

    /// Runs `args` and checks the outcome against `expect`.
    fn run(&mut self, args: &[OsString], expect: Expect<'_>) -> Outcome {
        self.run_timed(args, expect, TIMEOUT)
    }

    fn run_timed(&mut self, args: &[OsString], expect: Expect<'_>, timeout: Duration) -> Outcome {
        self.runs += 1;
        let o = kiln_in(&self.dir.0, args, timeout);
        // `KILN_HOSTILE_VERBOSE=1 cargo test --test hostile -- --nocapture` shows every run.
        if std::env::var_os("KILN_HOSTILE_VERBOSE").is_some() {
            eprintln!("{}", o.describe());
        }
        if let Some(why) = o.crash() {
            self.failures.push(format!("{why}\n  {}", o.describe()));
            return o;
        }
        let code = o.code();
        // `check` lists what it cannot import on stdout; every other message is on stderr.
        let err = format!("{}\n{}", o.stderr, o.stdout).to_lowercase();
        let names = |phrases: &[&str]| phrases.iter().any(|p| err.contains(&p.to_lowercase()));
        let problem = match expect {
            Expect::Error(p) => {
                if !matches!(code, Some(1 | 2)) {
                    Some(format!("expected a clean error (exit 1 or 2), got exit {code:?}"))
                } else if !names(p) {
                    Some(format!("the error does not name the problem (one of {p:?})"))
                } else {
                    None
                }
            }
            Expect::Warning(p) => {
                if code != Some(0) {
                    Some(format!("expected success with a warning, got exit {code:?}"))
                } else if !names(p) {
                    Some(format!("no warning naming the problem (one of {p:?})"))
                } else {
                    None
                }
            }
            Expect::OkOrError(p) => match code {
                Some(0) => None,
                Some(1 | 2) if names(p) => None,
                Some(1 | 2) => Some(format!("the error does not name the problem (one of {p:?})")),
                _ => Some(format!("expected success or a clean error, got exit {code:?}")),
            },
        };
        if let Some(why) = problem {
            self.failures.push(format!("{why}\n  {}", o.describe()));
        }
        o
    }

    /// Panics listing every failed run.
    fn finish(self) {
        if !self.failures.is_empty() {
            let mut msg = format!("{} of {} runs failed:\n", self.failures.len(), self.runs);
            for f in &self.failures {
                let _ = writeln!(msg, "- {f}");
            }
            panic!("{msg}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File writers: npy, safetensors, protobuf (ONNX), gzip

/// An `.npy` (v1.0, little-endian f32) of `dims` and `data`.
fn npy_f32(dims: &[usize], data: &[f32]) -> Vec<u8> {
    npy(
        "<f4",
        dims,
        &data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(),
    )
}

/// An `.npy` (v1.0, little-endian i64) of `dims` and `data`.
fn npy_i64(dims: &[usize], data: &[i64]) -> Vec<u8> {
    npy(
        "<i8",
        dims,
        &data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(),
    )
}

fn npy(descr: &str, dims: &[usize], raw: &[u8]) -> Vec<u8> {
    let shape = match dims {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(raw);
    out
}

/// A safetensors file of f32 tensors.
fn safetensors(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, dims, v)) in tensors.iter().enumerate() {
        let start = data.len();
        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        if i > 0 {
            header.push(',');
        }
        let _ = write!(
            header,
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{dims:?},\"data_offsets\":[{start},{}]}}",
            data.len()
        );
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// A protobuf message being written.
#[derive(Default, Clone)]
struct Pb(Vec<u8>);

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Pb {
    fn new() -> Pb {
        Pb::default()
    }

    fn key(mut self, field: u32, wire: u8) -> Pb {
        varint(u64::from(field) << 3 | u64::from(wire), &mut self.0);
        self
    }

    /// An int32/int64/enum field (negative values as 10-byte varints, as protobuf does).
    fn int(self, field: u32, v: i64) -> Pb {
        let mut s = self.key(field, 0);
        varint(v as u64, &mut s.0);
        s
    }

    fn bytes(self, field: u32, b: &[u8]) -> Pb {
        let mut s = self.key(field, 2);
        varint(b.len() as u64, &mut s.0);
        s.0.extend_from_slice(b);
        s
    }

    fn str(self, field: u32, v: &str) -> Pb {
        self.bytes(field, v.as_bytes())
    }

    fn msg(self, field: u32, m: &Pb) -> Pb {
        self.bytes(field, &m.0)
    }
}

/// ONNX `TensorProto.DataType`.
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// A `ValueInfoProto` of a float tensor of `dims`.
fn value_info(name: &str, dims: &[i64]) -> Pb {
    let mut shape = Pb::new();
    for &d in dims {
        shape = shape.msg(1, &Pb::new().int(1, d));
    }
    let tensor_type = Pb::new().int(1, FLOAT).msg(2, &shape);
    Pb::new().str(1, name).msg(2, &Pb::new().msg(1, &tensor_type))
}

/// A `NodeProto`.
fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[Pb]) -> Pb {
    let mut n = Pb::new();
    for i in inputs {
        n = n.str(1, i);
    }
    for o in outputs {
        n = n.str(2, o);
    }
    n = n.str(3, name).str(4, op);
    for a in attrs {
        n = n.msg(5, a);
    }
    n
}

/// An `AttributeProto` of type INTS.
fn attr_ints(name: &str, v: &[i64]) -> Pb {
    let mut a = Pb::new().str(1, name).int(20, 7);
    for &x in v {
        a = a.int(8, x);
    }
    a
}

/// A float `TensorProto` with its data in the message.
fn tensor_f32(name: &str, dims: &[i64], v: &[f32]) -> Pb {
    let mut t = Pb::new();
    for &d in dims {
        t = t.int(1, d);
    }
    t = t.int(2, FLOAT).str(8, name);
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    t.bytes(9, &raw)
}

/// An int64 `TensorProto` of rank 1.
fn tensor_i64(name: &str, v: &[i64]) -> Pb {
    let mut t = Pb::new().int(1, v.len() as i64).int(2, INT64).str(8, name);
    for &x in v {
        t = t.int(7, x);
    }
    t
}

/// A float `TensorProto` whose data is in the external file `location`.
fn tensor_external(name: &str, dims: &[i64], location: &str) -> Pb {
    let mut t = Pb::new();
    for &d in dims {
        t = t.int(1, d);
    }
    t.int(2, FLOAT)
        .str(8, name)
        .msg(13, &Pb::new().str(1, "location").str(2, location))
        .int(14, 1)
}

/// A `ModelProto` of one graph.
fn model(opset: i64, nodes: &[Pb], inputs: &[Pb], outputs: &[&str], inits: &[Pb]) -> Vec<u8> {
    let mut g = Pb::new();
    for n in nodes {
        g = g.msg(1, n);
    }
    g = g.str(2, "hostile");
    for i in inits {
        g = g.msg(5, i);
    }
    for i in inputs {
        g = g.msg(11, i);
    }
    for o in outputs {
        g = g.msg(12, &value_info(o, &[]));
    }
    Pb::new()
        .int(1, 8)
        .msg(8, &Pb::new().str(1, "").int(2, opset))
        .msg(7, &g)
        .0
}

/// CRC-32 (IEEE) of `bytes`, continuing from `crc`.
fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    crc = !crc;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `crc32(crc, &[0; n])` in O(log n) (zlib's `crc32_combine` over a run of zeros).
fn crc32_zeros(crc: u32, n: u64) -> u32 {
    fn times(mat: &[u32; 32], mut vec: u32) -> u32 {
        let mut sum = 0;
        let mut i = 0;
        while vec != 0 {
            if vec & 1 == 1 {
                sum ^= mat[i];
            }
            vec >>= 1;
            i += 1;
        }
        sum
    }
    fn square(mat: &[u32; 32]) -> [u32; 32] {
        std::array::from_fn(|i| times(mat, mat[i]))
    }
    if n == 0 {
        return crc;
    }
    // The operator of one zero bit on the (pre- and post-inverted) register.
    let mut odd = [0u32; 32];
    odd[0] = 0xEDB8_8320;
    for (i, o) in odd.iter_mut().enumerate().skip(1) {
        *o = 1 << (i - 1);
    }
    let mut even = square(&odd); // two zero bits
    odd = square(&even); // four
    let mut crc = crc;
    let mut n = n;
    // The register is inverted around the data: undo, apply the zeros, redo.
    crc = !crc;
    loop {
        even = square(&odd);
        if n & 1 == 1 {
            crc = times(&even, crc);
        }
        n >>= 1;
        if n == 0 {
            break;
        }
        odd = square(&even);
        if n & 1 == 1 {
            crc = times(&odd, crc);
        }
        n >>= 1;
        if n == 0 {
            break;
        }
    }
    !crc
}

/// A gzip "bomb": `prefix` stored, then about `1032 · compressed` zero bytes from a dynamic
/// Huffman block where a length-258, distance-1 copy costs two bits, so `compressed` bytes of
/// stream hold `≈ 1032·compressed` bytes of output. A valid gzip file (CRC and size correct).
fn gzip_bomb(prefix: &[u8], compressed: usize) -> Vec<u8> {
    // The stored block ends with one 0 byte, which the copies repeat.
    let mut head = prefix.to_vec();
    head.push(0);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    // Stored block: BFINAL 0, BTYPE 00, aligned; LEN, NLEN.
    out.push(0);
    out.extend((head.len() as u16).to_le_bytes());
    out.extend((!(head.len() as u16)).to_le_bytes());
    out.extend(&head);
    // The dynamic block, written bit by bit (LSB first; Huffman codes MSB first).
    let mut bits = BitWriter::default();
    bits.put(1, 1); // BFINAL
    bits.put(0b10, 2); // BTYPE dynamic
    bits.put(29, 5); // HLIT: 286 literal/length codes
    bits.put(1, 5); // HDIST: 2 distance codes
    bits.put(14, 4); // HCLEN: 18 code length codes
    // Code length code lengths in the order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1:
    // symbol 18 (a run of zeros) and symbol 1 (length 1) get one bit each.
    for sym in [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1] {
        bits.put(if sym == 18 || sym == 1 { 1 } else { 0 }, 3);
    }
    // Canonical codes of the code length code: symbol 1 → 0, symbol 18 → 1.
    let zeros = |bits: &mut BitWriter, mut n: u32| {
        while n > 0 {
            let run = n.min(138);
            assert!(run >= 11);
            bits.put(1, 1); // symbol 18
            bits.put(run - 11, 7);
            n -= run;
        }
    };
    zeros(&mut bits, 128); // literals 0..=127
    zeros(&mut bits, 128); // literals 128..=255
    bits.put(0, 1); // 256 (end of block): length 1
    zeros(&mut bits, 28); // 257..=284
    bits.put(0, 1); // 285 (length 258): length 1
    bits.put(0, 1); // distance 0: length 1
    bits.put(0, 1); // distance 1: length 1
    // Literal/length codes: 256 → 0, 285 → 1; distance codes: 0 (distance 1) → 0.
    let pairs = compressed * 4;
    for _ in 0..pairs {
        bits.put(1, 1);
        bits.put(0, 1);
    }
    bits.put(0, 1); // end of block
    out.extend(bits.finish());
    let zeros_out = pairs as u64 * 258;
    let total = head.len() as u64 + zeros_out;
    let crc = crc32_zeros(crc32(0, &head), zeros_out);
    out.extend(crc.to_le_bytes());
    out.extend((total as u32).to_le_bytes());
    out
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// `count` bits of `v`, least significant first.
    fn put(&mut self, v: u32, count: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

#[test]
fn the_test_writers_are_right() {
    // CRC-32 of zeros: the O(log n) form equals the plain one.
    for n in [0u64, 1, 2, 3, 7, 100, 1000] {
        assert_eq!(
            crc32_zeros(crc32(0, b"abc"), n),
            crc32(crc32(0, b"abc"), &vec![0; n as usize])
        );
    }
    assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
    // A small bomb decodes with the system's gzip, when there is one.
    let dir = TempDir::new("writers");
    let p = dir.write("small.gz", gzip_bomb(b"hi", 10));
    if let Ok(o) = Command::new("gzip").arg("-dc").arg(&p).output() {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout.len(), 3 + 40 * 258);
        assert!(o.stdout.starts_with(b"hi\0"));
        assert!(o.stdout[3..].iter().all(|&b| b == 0));
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Every subcommand that takes a `.kiln` model and reads it through to the graph (and, for
/// run/bench/grad, the weights): the error must come from every one of them.
fn all_commands(c: &mut Checks, model: &Path, x: &Path, target: &Path, expect: Expect<'_>) {
    let m = || arg(model);
    let input = arg(format!("{}", x.display()));
    let out = arg(c.dir.path("out.npy"));
    let grads = arg(c.dir.path("grads.safetensors"));
    c.run(&[arg("check"), m()], expect);
    c.run(&[arg("summary"), m()], expect);
    c.run(&[arg("compile"), m()], expect);
    c.run(&[arg("compile"), m(), arg("--emit"), arg("optimized")], expect);
    c.run(
        &[
            arg("run"),
            m(),
            arg("--input"),
            input.clone(),
            arg("--output"),
            out,
        ],
        expect,
    );
    c.run(
        &[
            arg("run"),
            m(),
            arg("--input"),
            input.clone(),
            arg("--engine"),
            arg("interp"),
        ],
        expect,
    );
    c.run(&[arg("bench"), m(), arg("--runs"), arg("1")], expect);
    c.run(
        &[
            arg("grad"),
            m(),
            arg("--input"),
            input,
            arg("--target"),
            arg(target),
            arg("--loss"),
            arg("mse"),
            arg("--output"),
            grads,
        ],
        expect,
    );
    c.run(
        &[
            arg("train"),
            m(),
            arg("--data"),
            arg("digits"),
            arg("--epochs"),
            arg("1"),
            arg("--no-progress"),
        ],
        expect,
    );
}

/// A `.kiln` model of `body` (inside `graph g { … }`), with a 2×2 input file and target.
fn kiln_case(name: &str, body: &str) -> (Checks, PathBuf, PathBuf, PathBuf) {
    let c = Checks::new(name);
    let model = c.write("model.kiln", format!("graph g {{\n{body}\n}}\n"));
    let x = c.write("x.npy", npy_f32(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]));
    let t = c.write("t.npy", npy_f32(&[1, 1, 1, 1], &[0.5]));
    (c, model, x, t)
}

const LIMIT: &[&str] = &["limit", "overflow", "too large", "too big", "exceed"];

// ---------------------------------------------------------------------------------------------
// 1. Sizes that overflow the JIT's offsets

#[test]
fn dilate_pad_to_2_pow_31_then_global_pool() {
    let (mut c, m, x, t) = kiln_case(
        "dilate_pad",
        "  input %x: f32[1, 1, 2, 2]\n  %d = dilate_pad2d(%x) {stride=[1, 1], padding=[0, 0, 2147483646, 2147483646]}\n  %p = global_max_pool(%d)\n  output %p",
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(LIMIT));
    c.finish();
}

#[test]
fn conv_transpose_with_strides_2_pow_31_minus_1_then_pool() {
    let (mut c, m, x, t) = kiln_case(
        "deconv_stride31",
        "  input %x: f32[1, 1, 2, 2]\n  param %w: f32[1, 1, 1, 1]\n  %t = conv_transpose2d(%x, %w) {stride=[2147483647, 2147483647]}\n  %p = global_max_pool(%t)\n  output %p",
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(LIMIT));
    c.finish();
}

#[test]
fn conv_transpose_with_strides_2_pow_63_minus_1_then_pool() {
    let (mut c, m, x, t) = kiln_case(
        "deconv_stride63",
        "  input %x: f32[1, 1, 2, 2]\n  param %w: f32[1, 1, 1, 1]\n  %t = conv_transpose2d(%x, %w) {stride=[9223372036854775807, 9223372036854775807]}\n  %p = global_max_pool(%t)\n  output %p",
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(LIMIT));
    c.finish();
}

/// A huge stride whose output is cropped back to 2×2: a small, valid-looking result computed
/// through offsets of 2³¹. Either refused, or both engines give the same answer.
#[test]
fn conv_transpose_with_a_huge_stride_cropped_back_to_small() {
    let (mut c, m, x, _t) = kiln_case(
        "deconv_crop",
        "  input %x: f32[1, 1, 2, 2]\n  param %w: f32[1, 1, 1, 1]\n  %t = conv_transpose2d(%x, %w) {stride=[2147483647, 2147483647], padding=[0, 0, 2147483646, 2147483646]}\n  %p = global_max_pool(%t)\n  output %p",
    );
    let mut printed = Vec::new();
    for engine in ["jit", "interp"] {
        let o = c.run(
            &[
                arg("run"),
                arg(&m),
                arg("--input"),
                arg(&x),
                arg("--engine"),
                arg(engine),
            ],
            Expect::OkOrError(LIMIT),
        );
        printed.push((o.code(), o.stdout));
    }
    if printed[0].0 == Some(0) && printed[1].0 == Some(0) && printed[0].1 != printed[1].1 {
        c.failures.push(format!(
            "the engines disagree:\n  jit: {}\n  interp: {}",
            printed[0].1.trim(),
            printed[1].1.trim()
        ));
    }
    c.run(
        &[arg("bench"), arg(&m), arg("--runs"), arg("1")],
        Expect::OkOrError(LIMIT),
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. ONNX external data that is not a regular file below the model's folder

/// A model `y = x + w` whose `w [1, 2]` is external data in `w.bin`, written by `make_data`.
fn external_data_case(name: &str, make_data: impl FnOnce(&Path, &Path)) -> (Checks, PathBuf, PathBuf) {
    let c = Checks::new(name);
    let folder = c.dir.path("model");
    std::fs::create_dir_all(&folder).unwrap();
    let bytes = model(
        13,
        &[node("Add", "add", &["x", "w"], &["y"], &[])],
        &[value_info("x", &[1, 2])],
        &["y"],
        &[tensor_external("w", &[1, 2], "w.bin")],
    );
    let m = folder.join("model.onnx");
    std::fs::write(&m, bytes).unwrap();
    make_data(&folder.join("w.bin"), &c.dir.0);
    let x = c.write("x.npy", npy_f32(&[1, 2], &[1.0, 2.0]));
    (c, m, x)
}

fn onnx_commands(c: &mut Checks, m: &Path, x: Option<&Path>, expect: Expect<'_>) {
    c.run(&[arg("check"), arg(m)], expect);
    c.run(&[arg("summary"), arg(m)], expect);
    c.run(&[arg("compile"), arg(m)], expect);
    c.run(&[arg("bench"), arg(m), arg("--runs"), arg("1")], expect);
    if let Some(x) = x {
        c.run(&[arg("run"), arg(m), arg("--input"), arg(x)], expect);
    }
}

const OUTSIDE: &[&str] = &["outside", "symlink", "below", "regular file", "not a file"];

#[test]
fn external_data_symlinked_to_a_file_outside_the_model_folder() {
    let (mut c, m, x) = external_data_case("ext_outside", |data, dir| {
        let secret = dir.join("secret.bin");
        std::fs::write(&secret, [0u8; 8]).unwrap();
        std::os::unix::fs::symlink(&secret, data).unwrap();
    });
    onnx_commands(&mut c, &m, Some(&x), Expect::Error(OUTSIDE));
    c.finish();
}

#[test]
fn external_data_symlinked_to_dev_zero() {
    let (mut c, m, x) = external_data_case("ext_dev_zero", |data, _| {
        std::os::unix::fs::symlink("/dev/zero", data).unwrap();
    });
    onnx_commands(&mut c, &m, Some(&x), Expect::Error(OUTSIDE));
    c.finish();
}

#[test]
fn external_data_that_is_a_fifo() {
    let (mut c, m, x) = external_data_case("ext_fifo", |data, _| {
        let p = std::ffi::CString::new(data.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { mkfifo(p.as_ptr(), 0o644) }, 0, "mkfifo");
    });
    onnx_commands(
        &mut c,
        &m,
        Some(&x),
        Expect::Error(&["regular file", "fifo", "not a file", "pipe"]),
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Shape inference and the summary over huge sizes

#[test]
fn max_pool_over_2_pow_40_with_pads_2_pow_62() {
    // text IR
    let (mut c, m, x, t) = kiln_case(
        "pool_huge_text",
        "  input %x: f32[1, 1, 1000000000000, 1]\n  %p = max_pool2d(%x) {kernel=[2, 1], stride=[1, 1], padding=[4611686018427387904, 0, 4611686018427387904, 0]}\n  output %p",
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(LIMIT));
    // a small input, pads 2^62
    let m2 = c.write(
        "pads.kiln",
        "graph g {\n  input %x: f32[1, 1, 4, 4]\n  %p = max_pool2d(%x) {kernel=[2, 2], stride=[1, 1], padding=[4611686018427387904, 0, 4611686018427387904, 0]}\n  output %p\n}\n",
    );
    c.run(&[arg("summary"), arg(&m2)], Expect::Error(LIMIT));
    c.run(
        &[arg("run"), arg(&m2), arg("--input"), arg(&x)],
        Expect::Error(LIMIT),
    );
    // ONNX: input dims 2^40, pads 2^62
    let onnx = c.write(
        "pool.onnx",
        model(
            13,
            &[node(
                "MaxPool",
                "pool",
                &["x"],
                &["y"],
                &[
                    attr_ints("kernel_shape", &[2, 1]),
                    attr_ints("pads", &[1 << 62, 0, 1 << 62, 0]),
                ],
            )],
            &[value_info("x", &[1, 1, 1 << 40, 1])],
            &["y"],
            &[],
        ),
    );
    onnx_commands(&mut c, &onnx, None, Expect::Error(LIMIT));
    let onnx2 = c.write(
        "pool2.onnx",
        model(
            13,
            &[node(
                "MaxPool",
                "pool",
                &["x"],
                &["y"],
                &[
                    attr_ints("kernel_shape", &[2, 1]),
                    attr_ints("pads", &[1 << 62, 0, 1 << 62, 0]),
                ],
            )],
            &[value_info("x", &[1, 1, 1_000_000_000_000, 1])],
            &["y"],
            &[],
        ),
    );
    onnx_commands(&mut c, &onnx2, None, Expect::Error(LIMIT));
    c.finish();
}

#[test]
fn summary_of_adaptive_pool_to_2_pow_31_squared() {
    let (mut c, m, x, t) = kiln_case(
        "adaptive_huge",
        "  input %x: f32[1, 1, 4, 4]\n  %p = adaptive_avg_pool2d(%x) {output=[2147483648, 2147483648]}\n  output %p",
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(LIMIT));
    // the largest output the limits allow, in one axis: the summary must not loop over it
    let m2 = c.write(
        "wide.kiln",
        "graph g {\n  input %x: f32[1, 1, 4, 4]\n  %p = adaptive_avg_pool2d(%x) {output=[1, 2147483648]}\n  output %p\n}\n",
    );
    c.run(&[arg("summary"), arg(&m2)], Expect::OkOrError(LIMIT));
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Runaway allocations

#[test]
fn input_of_10_pow_18_elements() {
    let (mut c, m, x, t) = kiln_case(
        "input_huge",
        "  input %x: f32[1, 1, 1000000000, 1000000000]\n  %p = global_avg_pool(%x)\n  output %p",
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(LIMIT));
    c.finish();
}

/// Weights of 3 × 2³¹ f32 (24 GiB): each within the per-tensor limit, together above the
/// 16 GiB limit of a model's weights. The default initialization must refuse them, not abort.
#[test]
fn huge_param_shapes_in_the_default_initialization() {
    let c = Checks::new("params_huge");
    let m = c.write(
        "model.kiln",
        "graph g {\n  input %x: f32[1, 65536]\n  param %w1: f32[32768, 65536]\n  param %w2: f32[65536, 32768]\n  param %w3: f32[32768, 65536]\n  %a = dense(%x, %w1)\n  %b = dense(%a, %w2)\n  %y = dense(%b, %w3)\n  output %y\n}\n",
    );
    // One 8 GiB weight: within the limits, but not within the 8 GiB address space of the test.
    let m1 = c.write(
        "one.kiln",
        "graph g {\n  input %x: f32[1, 65536]\n  param %w1: f32[32768, 65536]\n  %y = dense(%x, %w1)\n  output %y\n}\n",
    );
    let x = c.write("x.npy", npy_f32(&[1, 65536], &vec![0.5; 65536]));
    let t = c.write("t.npy", npy_f32(&[1, 32768], &vec![0.5; 32768]));
    let mut c = c;
    let memory: &[&str] = &["limit", "memory", "alloc", "too large", "exceed"];
    for model in [&m, &m1] {
        c.run(&[arg("summary"), arg(model)], Expect::OkOrError(LIMIT));
        c.run(
            &[arg("run"), arg(model), arg("--input"), arg(&x)],
            Expect::Error(memory),
        );
        c.run(
            &[
                arg("run"),
                arg(model),
                arg("--input"),
                arg(&x),
                arg("--engine"),
                arg("interp"),
            ],
            Expect::Error(memory),
        );
        c.run(
            &[arg("bench"), arg(model), arg("--runs"), arg("1")],
            Expect::Error(memory),
        );
        c.run(
            &[
                arg("grad"),
                arg(model),
                arg("--input"),
                arg(&x),
                arg("--target"),
                arg(&t),
                arg("--loss"),
                arg("mse"),
                arg("--output"),
                arg(c.dir.path("g.safetensors")),
            ],
            Expect::Error(memory),
        );
    }
    c.finish();
}

fn digits_model() -> PathBuf {
    repo("examples/models/digits_cnn.kiln")
}

#[test]
fn train_with_absurd_batches_is_refused_before_compiling() {
    let mut c = Checks::new("train_batch");
    let m = digits_model();
    for batch in ["1000000000000", "100000", "18446744073709551615"] {
        let o = c.run(
            &[
                arg("train"),
                arg(&m),
                arg("--data"),
                arg("digits"),
                arg("--batch"),
                arg(batch),
                arg("--epochs"),
                arg("1"),
                arg("--no-progress"),
            ],
            Expect::Error(&["batch"]),
        );
        if o.elapsed > Duration::from_secs(5) {
            c.failures.push(format!(
                "`--batch {batch}` took {:.1?}: it must be refused before compiling",
                o.elapsed
            ));
        }
    }
    for batch in ["1000000000000", "100000000"] {
        c.run(
            &[
                arg("bench"),
                arg(&m),
                arg("--batch"),
                arg(batch),
                arg("--runs"),
                arg("1"),
            ],
            Expect::Error(&["batch", "limit"]),
        );
    }
    c.finish();
}

#[test]
fn onnx_constant_of_shape_2_pow_31() {
    let mut c = Checks::new("constant_of_shape");
    let value = Pb::new()
        .str(1, "value")
        .int(20, 4)
        .msg(5, &tensor_f32("", &[1], &[0.5]));
    let bytes = model(
        13,
        &[
            node("ConstantOfShape", "cos", &["shape"], &["c"], &[value]),
            node("Add", "add", &["x", "c"], &["y"], &[]),
        ],
        &[value_info("x", &[1])],
        &["y"],
        &[tensor_i64("shape", &[1 << 31])],
    );
    let m = c.write("cos.onnx", bytes);
    let x = c.write("x.npy", npy_f32(&[1], &[1.0]));
    onnx_commands(
        &mut c,
        &m,
        Some(&x),
        Expect::Error(&["limit", "at most", "too large", "exceed", "budget"]),
    );
    c.finish();
}

/// IDX images and labels that each decompress from 1 MB to 1 GB (a valid header claiming one
/// 8×8 image or label, then ~10⁹ zero bytes).
#[test]
fn gzip_bomb_as_idx_images_and_labels() {
    let mut c = Checks::new("gzip_bomb");
    let mut img_header = vec![0, 0, 8, 3];
    for d in [1u32, 8, 8] {
        img_header.extend(d.to_be_bytes());
    }
    let mut lbl_header = vec![0, 0, 8, 1];
    lbl_header.extend(1u32.to_be_bytes());
    let images = c.write("images.gz", gzip_bomb(&img_header, 1 << 20));
    let labels = c.write("labels.gz", gzip_bomb(&lbl_header, 1 << 20));
    let mut ok_images = img_header.clone();
    ok_images.extend([0u8; 64]);
    let ok_images = c.write("ok-images", ok_images);
    let mut ok_labels = lbl_header.clone();
    ok_labels.push(3);
    let ok_labels = c.write("ok-labels", ok_labels);
    let m = digits_model();
    let phrases: &[&str] = &[
        "limit",
        "bytes after",
        "too large",
        "larger",
        "exceed",
        "gzip",
        "decompress",
    ];
    for (i, l) in [(&images, &ok_labels), (&ok_images, &labels), (&images, &labels)] {
        c.run(
            &[
                arg("train"),
                arg(&m),
                arg("--data"),
                arg(format!("idx:{},{}", i.display(), l.display())),
                arg("--epochs"),
                arg("1"),
                arg("--no-progress"),
            ],
            Expect::Error(phrases),
        );
    }
    c.finish();
}

/// Adaptive pooling from 8×8 up to 256×256: a valid graph whose kernel must not blow up the
/// compile (one window per output position unrolled). Success or a clean error, in time.
#[test]
fn adaptive_pool_up_to_256_squared_from_8_by_8() {
    let mut c = Checks::new("adaptive_up");
    let m = c.write(
        "model.kiln",
        "graph g {\n  input %x: f32[1, 1, 8, 8]\n  %p = adaptive_avg_pool2d(%x) {output=[256, 256]}\n  %q = adaptive_max_pool2d(%x) {output=[256, 256]}\n  output %p\n  output %q\n}\n",
    );
    let x = c.write("x.npy", npy_f32(&[1, 1, 8, 8], &[0.25; 64]));
    let out = c.dir.path("p.npy");
    let outq = c.dir.path("q.npy");
    c.run(
        &[
            arg("run"),
            arg(&m),
            arg("--input"),
            arg(&x),
            arg("--output"),
            arg(format!("p={}", out.display())),
            arg("--output"),
            arg(format!("q={}", outq.display())),
        ],
        Expect::OkOrError(LIMIT),
    );
    c.run(
        &[arg("bench"), arg(&m), arg("--runs"), arg("1")],
        Expect::OkOrError(LIMIT),
    );
    c.run(&[arg("summary"), arg(&m)], Expect::OkOrError(LIMIT));
    let o = c.run(
        &[arg("compile"), arg(&m), arg("--emit"), arg("clif")],
        Expect::OkOrError(LIMIT),
    );
    if o.stdout.len() > 1 << 20 {
        c.failures.push(format!(
            "{} bytes of Cranelift IR for two pooling kernels",
            o.stdout.len()
        ));
    }
    c.finish();
}

#[test]
fn a_thousand_threads() {
    let mut c = Checks::new("threads");
    let m = digits_model();
    let x = c.write("x.npy", npy_f32(&[1, 1, 8, 8], &[0.25; 64]));
    // 1000 is within the CLI's limit of 1024 threads: it runs (the JIT starts no more threads
    // than it has work for) or is refused; u64::MAX is refused by the argument parser.
    for (threads, expect) in [
        ("1000", Expect::OkOrError(&["thread"])),
        ("18446744073709551615", Expect::Error(&["thread"])),
    ] {
        c.run(
            &[
                arg("run"),
                arg(&m),
                arg("--input"),
                arg(&x),
                arg("--threads"),
                arg(threads),
            ],
            expect,
        );
        c.run(
            &[
                arg("bench"),
                arg(&m),
                arg("--runs"),
                arg("1"),
                arg("--threads"),
                arg(threads),
            ],
            expect,
        );
        let big = c.write(
            "big.kiln",
            "graph g {\n  input %x: f32[4, 16, 64, 64]\n  param %w: f32[16, 16, 3, 3]\n  %y = conv2d(%x, %w) {padding=[1, 1, 1, 1]}\n  %z = relu(%y)\n  output %z\n}\n",
        );
        c.run(
            &[
                arg("bench"),
                arg(&big),
                arg("--runs"),
                arg("1"),
                arg("--engine"),
                arg("jit"),
                arg("--threads"),
                arg(threads),
            ],
            expect,
        );
    }
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. Names and ranks

#[test]
fn summary_of_a_70000_character_name() {
    let name = "n".repeat(70_000);
    let (mut c, m, x, t) = kiln_case(
        "long_name",
        &format!("  input %x: f32[1, 1, 2, 2]\n  %{name} = relu(%x)\n  output %{name}"),
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(&["name", "long", "limit"]));
    // the same through ONNX (names are sanitized there)
    let onnx = c.write(
        "long.onnx",
        model(
            13,
            &[node("Relu", &name, &["x"], &[&name], &[])],
            &[value_info("x", &[1, 1, 2, 2])],
            &[&name],
            &[],
        ),
    );
    onnx_commands(&mut c, &onnx, None, Expect::Error(&["name", "long", "limit"]));
    c.finish();
}

#[test]
fn summary_of_a_rank_70000_tensor() {
    let dims = vec!["1"; 70_000].join(", ");
    let (mut c, m, x, t) = kiln_case(
        "rank_huge",
        &format!("  input %x: f32[{dims}]\n  %y = relu(%x)\n  output %y"),
    );
    all_commands(&mut c, &m, &x, &t, Expect::Error(&["rank", "limit", "dims"]));
    let onnx = c.write(
        "rank.onnx",
        model(
            13,
            &[node("Relu", "r", &["x"], &["y"], &[])],
            &[value_info("x", &vec![1; 70_000])],
            &["y"],
            &[],
        ),
    );
    onnx_commands(&mut c, &onnx, None, Expect::Error(&["rank", "limit", "dims"]));
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 6. Malformed but small files and arguments

#[test]
fn two_onnx_nodes_writing_the_same_output() {
    let mut c = Checks::new("dup_output");
    let m = c.write(
        "dup.onnx",
        model(
            13,
            &[
                node("Relu", "a", &["x"], &["y"], &[]),
                node("Sigmoid", "b", &["x"], &["y"], &[]),
            ],
            &[value_info("x", &[1, 4])],
            &["y"],
            &[],
        ),
    );
    let x = c.write("x.npy", npy_f32(&[1, 4], &[1.0; 4]));
    onnx_commands(
        &mut c,
        &m,
        Some(&x),
        Expect::Error(&["twice", "duplicate", "more than once"]),
    );
    c.finish();
}

#[test]
fn onnx_opset_zero_or_negative() {
    let mut c = Checks::new("opset");
    for opset in [0, -1, i64::MIN] {
        let m = c.write(
            &format!("opset{opset}.onnx"),
            model(
                opset,
                &[node("Relu", "a", &["x"], &["y"], &[])],
                &[value_info("x", &[1, 4])],
                &["y"],
                &[],
            ),
        );
        onnx_commands(&mut c, &m, None, Expect::Error(&["opset"]));
    }
    c.finish();
}

#[test]
fn bytes_after_the_end_of_an_npy() {
    let mut c = Checks::new("npy_trailing");
    let m = digits_model();
    let mut x = npy_f32(&[1, 1, 8, 8], &[0.25; 64]);
    x.extend([1, 2, 3, 4]);
    let x = c.write("x.npy", x);
    let good_x = c.write("good.npy", npy_f32(&[1, 1, 8, 8], &[0.25; 64]));
    let mut t = npy_i64(&[1], &[3]);
    t.extend([0; 8]);
    let t = c.write("t.npy", t);
    let phrases: &[&str] = &["after the end", "trailing", "bytes after", "extra"];
    c.run(
        &[arg("run"), arg(&m), arg("--input"), arg(&x)],
        Expect::Error(phrases),
    );
    let grad = |c: &mut Checks, x: &Path, t: &Path| {
        let out = arg(c.dir.path("g.safetensors"));
        c.run(
            &[
                arg("grad"),
                arg(&m),
                arg("--input"),
                arg(x),
                arg("--target"),
                arg(t),
                arg("--loss"),
                arg("cross-entropy"),
                arg("--output"),
                out,
            ],
            Expect::Error(phrases),
        );
    };
    let good_t = c.write("good-t.npy", npy_i64(&[1], &[3]));
    grad(&mut c, &x, &good_t);
    grad(&mut c, &good_x, &t);
    c.finish();
}

#[test]
fn a_duplicate_input_argument() {
    let mut c = Checks::new("dup_input");
    let m = digits_model();
    let x = c.write("x.npy", npy_f32(&[1, 1, 8, 8], &[0.25; 64]));
    let t = c.write("t.npy", npy_i64(&[1], &[3]));
    let named = arg(format!("input={}", x.display()));
    let phrases: &[&str] = &["twice", "duplicate", "more than once"];
    c.run(
        &[
            arg("run"),
            arg(&m),
            arg("--input"),
            named.clone(),
            arg("--input"),
            named.clone(),
        ],
        Expect::Error(phrases),
    );
    c.run(
        &[
            arg("run"),
            arg(&m),
            arg("--input"),
            arg(&x),
            arg("--input"),
            named.clone(),
        ],
        Expect::Error(phrases),
    );
    c.run(
        &[
            arg("grad"),
            arg(&m),
            arg("--input"),
            named.clone(),
            arg("--input"),
            named,
            arg("--target"),
            arg(&t),
            arg("--loss"),
            arg("cross-entropy"),
            arg("--output"),
            arg(c.dir.path("g.safetensors")),
        ],
        Expect::Error(phrases),
    );
    c.finish();
}

#[test]
fn zero_runs_and_zero_batches() {
    let mut c = Checks::new("zeros");
    let m = digits_model();
    c.run(
        &[arg("bench"), arg(&m), arg("--runs"), arg("0")],
        Expect::Error(&["runs"]),
    );
    c.run(
        &[
            arg("bench"),
            arg(&m),
            arg("--batch"),
            arg("0"),
            arg("--runs"),
            arg("1"),
        ],
        Expect::Error(&["batch"]),
    );
    c.run(
        &[
            arg("train"),
            arg(&m),
            arg("--data"),
            arg("digits"),
            arg("--batch"),
            arg("0"),
            arg("--no-progress"),
        ],
        Expect::Error(&["batch"]),
    );
    c.run(
        &[
            arg("train"),
            arg(&m),
            arg("--data"),
            arg("digits"),
            arg("--epochs"),
            arg("0"),
            arg("--no-progress"),
        ],
        Expect::OkOrError(&["epoch"]),
    );
    c.finish();
}

#[test]
fn an_extra_tensor_in_the_weights_is_a_warning() {
    let mut c = Checks::new("extra_weight");
    let m = c.write(
        "model.kiln",
        "graph g {\n  input %x: f32[1, 4]\n  param %w: f32[2, 4]\n  %y = dense(%x, %w)\n  output %y\n}\n",
    );
    let w = c.write(
        "w.safetensors",
        safetensors(&[
            ("w", &[2, 4], &[0.5; 8]),
            ("not_in_the_model", &[3], &[1.0, 2.0, 3.0]),
        ]),
    );
    let x = c.write("x.npy", npy_f32(&[1, 4], &[1.0; 4]));
    let o = c.run(
        &[
            arg("run"),
            arg(&m),
            arg("--input"),
            arg(&x),
            arg("--weights"),
            arg(&w),
        ],
        Expect::Warning(&["not_in_the_model"]),
    );
    if o.code() == Some(0) && !o.stdout.contains('2') {
        c.failures
            .push(format!("the output is not printed: {}", o.describe()));
    }
    c.run(
        &[
            arg("bench"),
            arg(&m),
            arg("--runs"),
            arg("1"),
            arg("--weights"),
            arg(&w),
        ],
        Expect::Warning(&["not_in_the_model"]),
    );
    c.finish();
}

#[test]
fn grad_on_nan_inputs_is_a_warning() {
    let mut c = Checks::new("nan_grad");
    let m = digits_model();
    let mut data = vec![0.25f32; 64];
    data[5] = f32::NAN;
    data[9] = f32::INFINITY;
    let x = c.write("x.npy", npy_f32(&[1, 1, 8, 8], &data));
    let t = c.write("t.npy", npy_i64(&[1], &[3]));
    c.run(
        &[
            arg("grad"),
            arg(&m),
            arg("--input"),
            arg(&x),
            arg("--target"),
            arg(&t),
            arg("--loss"),
            arg("cross-entropy"),
            arg("--output"),
            arg(c.dir.path("g.safetensors")),
        ],
        Expect::Warning(&["nan"]),
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. Names that collide after sanitizing

/// 10,000 ONNX values and nodes whose names all sanitize to `v__`: the importer must give them
/// distinct names without quadratic work.
#[test]
fn ten_thousand_names_that_sanitize_to_the_same_string() {
    let mut c = Checks::new("sanitize");
    // 100 non-ASCII letters, two of them after `v`: 10,000 distinct names, all `v__`.
    let chars: Vec<char> = (0..100u32).map(|i| char::from_u32(0x0100 + i).unwrap()).collect();
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("v{}{}", chars[i / 100], chars[i % 100]))
        .collect();
    let mut nodes = Vec::with_capacity(names.len());
    let mut prev = "x".to_string();
    for n in &names {
        nodes.push(node("Relu", n, &[&prev], &[n], &[]));
        prev = n.clone();
    }
    let m = c.write(
        "names.onnx",
        model(13, &nodes, &[value_info("x", &[1, 4])], &[&prev], &[]),
    );
    let generous = Duration::from_secs(60);
    c.run_timed(&[arg("check"), arg(&m)], Expect::OkOrError(LIMIT), generous);
    let o = c.run_timed(&[arg("summary"), arg(&m)], Expect::OkOrError(LIMIT), generous);
    if o.code() == Some(0) && !o.stdout.contains("v__") {
        c.failures
            .push(format!("the summary does not name the layers: {}", o.describe()));
    }
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// The same property on generated graphs: extreme random graphs through both engines

/// A small deterministic byte stream (xorshift).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What the `jit_vs_interp` fuzz target checks, on graphs of `kiln_ir::random`'s extreme
/// mode: every small one is refused cleanly by an engine or gets the same answer from both.
#[test]
fn extreme_random_graphs_are_refused_or_agree_on_both_engines() {
    use kiln::ir::random::{Mode, graph_from_bytes_with};
    let (mut ran, mut failures) = (0, Vec::new());
    for seed in 0..400 {
        let Ok(g) = graph_from_bytes_with(&bytes(seed, 300), Mode::Extreme) else {
            continue;
        };
        let small = g.petgraph().node_weights().all(|n| n.ty.shape.numel() <= 1 << 14);
        if !small {
            continue;
        }
        ran += 1;
        if let Err(e) = kiln::check::jit_matches_interpreter(&g, seed) {
            let refused = [
                "interpreter failed",
                "compile failed",
                "weights:",
                "JIT run failed",
            ]
            .iter()
            .any(|p| e.starts_with(p));
            if !refused {
                failures.push(format!("seed {seed}: {e}"));
            }
        }
    }
    assert!(ran > 20, "only {ran} extreme graphs were small enough to run");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Found by the fuzzer

/// `jit_vs_interp`, `timeout-b6f156542b167a576b612e8e24b84fb5631e0682` (and `c6103cd9…`, the
/// same graph with 16 relus): an extreme graph over an empty input `f32[2147483647,
/// 2147483647, 4, 0]` — valid, 0 elements — whose `concat` the interpreter computes with a loop
/// over the 2^62 outer positions (`kiln_interp::layout::concat`), each copying nothing: a hang.
/// `softmax` over an inner axis (`kiln_interp::softmax`) does the same, and `log_softmax` over
/// axis 1 allocates a row of 2^31 − 1 elements for an empty tensor ("memory allocation of
/// 8589934588 bytes failed", SIGABRT under the 8 GiB limit). The JIT compiles no kernel for an
/// empty value and returns at once.
#[test]
fn empty_tensors_with_huge_outer_dims_do_not_hang() {
    use kiln::ir::random::{Mode, graph_from_bytes_with};
    let mut c = Checks::new("empty_huge");
    let fuzzer: &[u8] = &[
        0xd5, 0x01, 0x02, 0x00, 0x02, 0xff, 0x4c, 0x95, 0x00, 0x06, 0x76, 0xff, 0x7e, 0x06, 0x7e, 0xff, 0xee,
        0x0b,
    ];
    let g = graph_from_bytes_with(&fuzzer[1..], Mode::Extreme).expect("the fuzzer's graph");
    let mut models = vec![c.write("fuzzer.kiln", kiln::ir::text::print(&g))];
    let x = "  input %x: f32[2147483647, 2147483647, 4, 0]";
    for (name, body) in [
        ("concat", "  %y = concat(%x, %x) {axis=2}"),
        ("softmax", "  %y = softmax(%x) {axis=3}"),
        ("log_softmax", "  %y = log_softmax(%x) {axis=1}"),
    ] {
        models.push(c.write(
            &format!("{name}.kiln"),
            format!("graph g {{\n{x}\n{body}\n  output %y\n}}\n"),
        ));
    }
    let input = c.write("x.npy", npy_f32(&[2147483647, 2147483647, 4, 0], &[]));
    // Each hang costs its timeout: one run per model and engine, 5 s each.
    let short = Duration::from_secs(5);
    for m in &models {
        for engine in ["interp", "jit"] {
            c.run_timed(
                &[
                    arg("run"),
                    arg(m),
                    arg("--input"),
                    arg(&input),
                    arg("--engine"),
                    arg(engine),
                ],
                Expect::OkOrError(LIMIT),
                short,
            );
        }
    }
    c.finish();
}
