//! Random valid graphs decoded from bytes: one generator shared by proptest and the fuzz targets.
//!
//! [`graph_from_bytes`] reads a byte string as a sequence of choices (which op, which operand,
//! which attributes) and builds a graph from them. The same function serves both test drivers:
//!
//! - **proptest** (stable, in `cargo test`): the strategy is `Vec<u8>` mapped through
//!   `graph_from_bytes` (see `crates/kiln-ir/tests/roundtrip.rs`), so shrinking a failure
//!   shrinks the bytes and therefore the graph;
//! - **cargo-fuzz** (`fuzz/fuzz_targets/random_graph.rs`): libFuzzer's input bytes go straight in,
//!   so coverage feedback steers the choices.
//!
//! Decoding never panics and every byte string decodes to a graph: when the bytes run out,
//! every further read is `0`, and the zero choice of every decision is a valid one. The graph
//! has at least one computed node and at least one output (every computed node nobody reads).
//!
//! Graphs are valid by construction, not filtered: each step picks an op and its attributes,
//! picks operands among the existing values of a fitting shape (so chains, residual adds,
//! concats of branches and other DAGs appear), creates the weights the op needs, and asks shape
//! inference ([`crate::shape::infer`]) about the result *before* anything is added. When shape
//! inference rejects the choice, or the result would be larger than the size bounds below, the
//! step tries another choice (a bounded number of times, then falls back to a ReLU, which always
//! fits). Shapes stay small — 4-D values at most `N ≤ 2, C ≤ 6, H, W ≤ 9` at the inputs, every
//! dim of a rank-3/4 value `≤ 9`, and at most 972 elements per value — so later layers can
//! run these graphs through the interpreter and the JIT quickly.
//!
//! [`graph_from_source`] decodes from a [`ByteSource`] and leaves the rest of the bytes unread,
//! for fuzz targets that go on to draw input data from the same input.
//!
//! # Extreme mode
//!
//! [`graph_from_bytes_with`] with [`Mode::Extreme`] draws the same graphs, except that now and
//! then (one draw in sixteen, steered by the bytes) a dim, kernel, stride, dilation, padding,
//! group count, output size, axis, permutation entry or reshape dim is replaced by one of
//! [`EXTREME_USIZE`] (`0`, `1`, `2³¹ − 1`, `2³¹`, `2³²`, `2⁶²`, `2⁶³ − 1`, `usize::MAX − 1`,
//! `usize::MAX`) or, where the field is signed, [`EXTREME_I64`] (the same and their negatives,
//! `i64::MIN`). Extreme mode also makes the training ops `dilate_pad2d` (signed padding) and
//! `rot180`. It tests that hostile attributes give a clean error, never a panic, an overflow or
//! a hang: a choice that used an extreme value is not retried when the graph refuses it — the
//! generator returns that `Err` — and an accepted one is kept even when its result is far beyond
//! the size bounds above (it is still within [`crate::limits`]). Without substitutions extreme
//! mode decodes exactly like the normal mode, which never returns `Err`.

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::{
    Activation, BinaryOp, Conv2d, ConvTranspose2d, Gemm, Im2Col, LossKind, Op, Padding, Pool2d, PoolKind,
    ReduceKind, TrainOp,
};
use crate::shape;
use crate::tensor::{DType, TensorType};

/// Most elements in any value the generator creates.
pub const MAX_ELEMENTS: usize = 972;
/// Largest dim of a rank-3 or rank-4 value.
pub const MAX_SPATIAL: usize = 9;
/// Most ops (steps) in one graph; each step adds one or two computed nodes.
pub const MAX_STEPS: usize = 16;
/// Choices tried per step before falling back to a ReLU.
const ATTEMPTS: usize = 6;

/// The unsigned values extreme mode substitutes for dims and attributes.
pub const EXTREME_USIZE: [usize; 9] = [
    0,
    1,
    (1 << 31) - 1,
    1 << 31,
    1 << 32,
    1 << 62,
    (1 << 63) - 1,
    usize::MAX - 1,
    usize::MAX,
];

/// The signed values extreme mode substitutes for axes, reshape dims and crop/pad amounts.
pub const EXTREME_I64: [i64; 12] = [
    0,
    1,
    -1,
    (1 << 31) - 1,
    1 << 31,
    1 << 62,
    i64::MAX,
    -(1 << 31),
    -(1 << 32),
    -(1 << 62),
    i64::MIN + 1,
    i64::MIN,
];

/// How [`graph_from_bytes_with`] draws dims and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Small valid graphs within the size bounds; never an `Err`.
    #[default]
    Normal,
    /// Now and then an extreme value (see the module docs); may be an `Err`.
    Extreme,
}

/// Reads choices from a byte string; past its end every read is `0`.
#[derive(Debug, Clone)]
pub struct ByteSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteSource<'a> {
    pub fn new(data: &'a [u8]) -> ByteSource<'a> {
        ByteSource { data, pos: 0 }
    }

    /// The next byte, or `0` once the input is used up.
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// A number in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => {
                self.byte();
                0
            }
            2..=256 => usize::from(self.byte()) % n,
            _ => (usize::from(self.byte()) << 8 | usize::from(self.byte())) % n,
        }
    }

    /// A number in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// A coin flip; `false` once the input is used up.
    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `items` (`None` if there are none).
    pub fn choose<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        let i = self.below(items.len());
        items.get(i).cloned()
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    /// True once every byte has been read.
    pub fn is_exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// A random valid graph decoded from `bytes` (see the module docs). Never panics.
pub fn graph_from_bytes(bytes: &[u8]) -> Graph {
    graph_from_source(&mut ByteSource::new(bytes))
}

/// As [`graph_from_bytes`], reading from `src` and leaving the bytes after the graph unread.
pub fn graph_from_source(src: &mut ByteSource<'_>) -> Graph {
    match graph_from_source_with(src, Mode::Normal) {
        Ok(g) => g,
        // Normal mode records no error (every refused choice is retried or dropped).
        Err(_) => unreachable!("normal mode never fails"),
    }
}

/// A graph decoded from `bytes` in `mode`: with [`Mode::Normal`] always `Ok` (the graph of
/// [`graph_from_bytes`]); with [`Mode::Extreme`] a valid graph, or the error with which the
/// graph refused an extreme choice. Never panics.
pub fn graph_from_bytes_with(bytes: &[u8], mode: Mode) -> Result<Graph, IrError> {
    graph_from_source_with(&mut ByteSource::new(bytes), mode)
}

/// As [`graph_from_bytes_with`], reading from `src` and leaving the bytes after the graph unread.
pub fn graph_from_source_with(src: &mut ByteSource<'_>, mode: Mode) -> Result<Graph, IrError> {
    let mut g = Gen {
        src,
        g: Graph::new(),
        values: Vec::new(),
        counter: 0,
        extreme: mode == Mode::Extreme,
        substituted: false,
        error: None,
    };
    g.g.name = "random".into();
    g.inputs();
    if let Some(e) = g.error {
        return Err(e);
    }
    let steps = 1 + g.src.below(MAX_STEPS);
    for _ in 0..steps {
        g.step();
        if let Some(e) = g.error {
            return Err(e);
        }
    }
    g.mark_outputs();
    Ok(g.g)
}

/// Whether a value of type `t` is within the generator's size bounds.
fn fits(t: &TensorType) -> bool {
    let n = t.shape.numel();
    (1..=MAX_ELEMENTS).contains(&n)
        && t.rank() <= 4
        && (t.rank() < 3 || t.dims().iter().all(|&d| d <= MAX_SPATIAL))
}

/// The divisors of `c` up to 64, and `c` itself (every divisor for the generator's sizes).
fn divisors(c: usize) -> Vec<usize> {
    let mut divs: Vec<usize> = (1..=c.min(64)).filter(|d| c.is_multiple_of(*d)).collect();
    if c > 64 {
        divs.push(c);
    }
    divs
}

/// An operand of a node about to be added: an existing node, or a new source node (named
/// `NODE.SUFFIX`) created together with it.
enum Operand {
    Node(NodeId),
    Param(&'static str, TensorType),
    Buffer(&'static str, TensorType),
    Input(&'static str, TensorType),
}

struct Gen<'s, 'a> {
    src: &'s mut ByteSource<'a>,
    g: Graph,
    /// The f32 values (graph inputs and computed nodes) that ops may read, oldest first.
    values: Vec<NodeId>,
    counter: usize,
    /// Extreme mode (see the module docs).
    extreme: bool,
    /// Whether an extreme value was substituted since the last node was added.
    substituted: bool,
    /// The graph's refusal of an extreme choice: generation stops and returns it.
    error: Option<IrError>,
}

impl Gen<'_, '_> {
    fn ty(&self, id: NodeId) -> &TensorType {
        &self.g.node(id).ty
    }

    fn dims(&self, id: NodeId) -> Vec<usize> {
        self.ty(id).dims().to_vec()
    }

    /// `v`, or in extreme mode now and then one of [`EXTREME_USIZE`]. Normal mode reads no
    /// byte, so it decodes as it always did.
    fn ex(&mut self, v: usize) -> usize {
        if !self.extreme {
            return v;
        }
        let b = self.src.byte();
        if b < 16 {
            self.substituted = true;
            EXTREME_USIZE[usize::from(b) % EXTREME_USIZE.len()]
        } else {
            v
        }
    }

    /// [`Gen::ex`] of both.
    fn ex2(&mut self, v: [usize; 2]) -> [usize; 2] {
        [self.ex(v[0]), self.ex(v[1])]
    }

    /// `v`, or in extreme mode now and then one of [`EXTREME_I64`].
    fn ex_i64(&mut self, v: i64) -> i64 {
        if !self.extreme {
            return v;
        }
        let b = self.src.byte();
        if b < 16 {
            self.substituted = true;
            EXTREME_I64[usize::from(b) % EXTREME_I64.len()]
        } else {
            v
        }
    }

    /// In extreme mode, keeps the first error of building the graph (generation then stops).
    fn fail(&mut self, e: IrError) {
        if self.extreme && self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn inputs(&mut self) {
        let n = self.src.range(1, 2);
        let n = self.ex(n);
        let c = self.src.range(1, 6);
        let c = self.ex(c);
        let h = self.src.range(1, MAX_SPATIAL);
        let h = self.ex(h);
        let w = self.src.range(1, MAX_SPATIAL);
        let w = self.ex(w);
        let shapes: Vec<Vec<usize>> = match self.src.below(6) {
            0..=2 => vec![vec![n, c, h, w]],
            3 => {
                let c2 = if self.src.flag() { c } else { self.src.range(1, 6) };
                vec![vec![n, c, h, w], vec![n, c2, h, w]]
            }
            4 => {
                let k = self.src.range(1, 16);
                vec![vec![n, self.ex(k)]]
            }
            _ => vec![vec![n, c, h], vec![n, c, h, w]],
        };
        for (i, s) in shapes.into_iter().enumerate() {
            let name = if i == 0 {
                "x".to_string()
            } else {
                format!("x{}", i + 1)
            };
            match self.g.input(name, TensorType::f32(s)) {
                Ok(id) => self.values.push(id),
                Err(e) => self.fail(e),
            }
        }
    }

    /// One step: an op chosen from the bytes, retried with other choices if it does not fit.
    fn step(&mut self) {
        for _ in 0..ATTEMPTS {
            // Extreme mode also makes two training ops with attributes of their own.
            let made = match self.src.below(if self.extreme { 24 } else { 22 }) {
                0 => self.activation(),
                1 | 2 => self.conv2d(),
                3 => self.conv_transpose2d(),
                4 => self.pool2d(),
                5 => self.global_or_adaptive_pool(),
                6 => self.softmax(),
                7 => self.flatten(),
                8 => self.dense(),
                9 => self.matmul(),
                10 => self.reshape(),
                11 => self.transpose(),
                12 => self.binary(),
                13 => self.concat(),
                14 => self.dropout(),
                15 => self.batch_norm(),
                17 => self.im2col(),
                18 => self.gemm(),
                19 => self.rsqrt(),
                20 => self.lrn(),
                21 => self.reduce_mean(),
                22 => self.dilate_pad(),
                23 => self.rot180(),
                _ => self.loss(),
            };
            if made.is_some() || self.error.is_some() {
                return;
            }
            self.substituted = false;
        }
        if let Some(&x) = self.values.last() {
            self.add("relu", Op::Activation(Activation::Relu), vec![Operand::Node(x)]);
        }
    }

    /// A value satisfying `ok`: usually the newest one (which grows chains), else any.
    fn pick(&mut self, ok: impl Fn(&TensorType) -> bool) -> Option<NodeId> {
        let cands: Vec<NodeId> = self.values.iter().copied().filter(|&v| ok(self.ty(v))).collect();
        let last = *cands.last()?;
        let b = self.src.byte();
        Some(if b < 128 {
            last
        } else {
            cands[usize::from(b) % cands.len()]
        })
    }

    /// Adds `op` over `operands` if shape inference accepts it and the result fits the bounds;
    /// nothing is added otherwise.
    fn add(&mut self, base: &str, op: Op, operands: Vec<Operand>) -> Option<NodeId> {
        let types: Vec<TensorType> = operands
            .iter()
            .map(|o| match o {
                Operand::Node(id) => self.ty(*id).clone(),
                Operand::Param(_, t) | Operand::Buffer(_, t) | Operand::Input(_, t) => t.clone(),
            })
            .collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        // A choice with an extreme value goes straight to the graph, whose error ends the
        // generation; an accepted one is kept whatever its size.
        let extreme_choice = std::mem::take(&mut self.substituted);
        match shape::infer(&op, &refs) {
            Ok(ty) if !self.extreme && !fits(&ty) => return None,
            Ok(_) => {}
            // The graph refuses it below, with an error naming the node.
            Err(_) if extreme_choice => {}
            Err(_) => return None,
        }
        self.counter += 1;
        // Now and then a dotted name, as in `layer1.conv2d_3`.
        let name = match self.src.below(8) {
            7 => format!("block{}.{base}_{}", self.counter % 3, self.counter),
            _ => format!("{base}_{}", self.counter),
        };
        let mut ids = Vec::with_capacity(operands.len());
        for o in operands {
            let id = match o {
                Operand::Node(id) => Ok(id),
                Operand::Param(s, t) => self.g.param(format!("{name}.{s}"), t),
                Operand::Buffer(s, t) => self.g.buffer(format!("{name}.{s}"), t),
                Operand::Input(s, t) => self.g.input(format!("{name}.{s}"), t),
            };
            match id {
                Ok(id) => ids.push(id),
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            }
        }
        let id = match self.g.add(name, op, &ids) {
            Ok(id) => id,
            Err(e) => {
                self.fail(e);
                return None;
            }
        };
        if self.g.node(id).ty.dtype == DType::F32 {
            self.values.push(id);
        }
        Some(id)
    }

    fn divisor(&mut self, c: usize) -> usize {
        let divs = divisors(c);
        self.src.choose(&divs).unwrap_or(1)
    }

    /// Groups of a convolution over `c` channels: plain, depthwise, or any divisor.
    fn groups(&mut self, c: usize) -> usize {
        let g = match self.src.below(3) {
            0 => 1,
            1 => c,
            _ => self.divisor(c),
        };
        self.ex(g)
    }

    /// Output channels of a convolution with `groups` groups: a multiple of `groups`.
    fn out_channels(&mut self, groups: usize) -> usize {
        let per_group = self.src.range(1, 6usize.checked_div(groups).unwrap_or(1).max(1));
        let co = groups.saturating_mul(per_group);
        self.ex(co)
    }

    fn pair(&mut self, lo: usize, hi: usize) -> [usize; 2] {
        let p = [self.src.range(lo, hi), self.src.range(lo, hi)];
        self.ex2(p)
    }

    /// A stride or dilation: mostly 1, sometimes up to `hi`, per axis.
    fn small_pair(&mut self, hi: usize) -> [usize; 2] {
        let p = match self.src.below(3) {
            0 => [1, 1],
            1 => {
                let s = self.src.range(1, hi);
                [s, s]
            }
            _ => [self.src.range(1, hi), self.src.range(1, hi)],
        };
        self.ex2(p)
    }

    /// Padding with explicit sides of at most `max` each, or one of the named kinds.
    fn padding(&mut self, max: [usize; 2]) -> Padding {
        match self.src.below(6) {
            0 | 1 => {
                let p = [
                    self.src.range(0, max[0]),
                    self.src.range(0, max[1]),
                    self.src.range(0, max[0]),
                    self.src.range(0, max[1]),
                ];
                Padding::Explicit(p.map(|v| self.ex(v)))
            }
            2 => {
                let p = self.src.range(0, max[0].min(max[1]));
                Padding::uniform(self.ex(p))
            }
            3 => Padding::Valid,
            4 => Padding::SameUpper,
            _ => Padding::SameLower,
        }
    }

    fn activation(&mut self) -> Option<NodeId> {
        let x = self.pick(|_| true)?;
        let a = match self.src.below(10) {
            0 => Activation::Relu,
            1 => {
                let alpha = match self.src.below(3) {
                    0 => 0.01,
                    1 => self
                        .src
                        .choose(&[0.2, 0.1, -0.5, 1.5, 1e-3, 1.0 / 3.0, 0.0, 2.0])?,
                    _ => (f32::from(self.src.byte()) - 128.0) / 37.0,
                };
                Activation::LeakyRelu { alpha }
            }
            2 => Activation::Sigmoid,
            3 => Activation::Tanh,
            4 => {
                let (min, max) = match self.src.below(4) {
                    0 => (0.0, 6.0),
                    1 => (f32::NEG_INFINITY, 0.5),
                    2 => (-0.25, f32::INFINITY),
                    _ => (-1.0, 1.0),
                };
                Activation::Clip { min, max }
            }
            5 => {
                let (alpha, beta) = self.src.choose(&[(0.2, 0.5), (1.0 / 6.0, 0.5), (-0.5, 0.25)])?;
                Activation::HardSigmoid { alpha, beta }
            }
            6 => Activation::Erf,
            7 => Activation::Silu,
            8 => Activation::Gelu,
            _ => Activation::HardSwish,
        };
        self.add(
            Op::Activation(a).name(),
            Op::Activation(a),
            vec![Operand::Node(x)],
        )
    }

    fn conv2d(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() == 4)?;
        let c = self.dims(x)[1];
        let groups = self.groups(c);
        let co = self.out_channels(groups);
        let kernel = self.pair(1, 3);
        let attrs = Conv2d {
            stride: self.small_pair(3),
            dilation: self.small_pair(2),
            padding: self.padding([2, 2]),
            groups,
            activation: match self.src.range(0, 8) {
                0 => Some(Activation::Relu),
                1 => Some(Activation::LeakyRelu { alpha: 0.25 }),
                2 => Some(Activation::Sigmoid),
                3 => Some(Activation::Tanh),
                _ => None,
            },
        };
        let mut ops = vec![
            Operand::Node(x),
            Operand::Param(
                "weight",
                TensorType::f32([co, c.checked_div(groups).unwrap_or(0), kernel[0], kernel[1]]),
            ),
        ];
        if self.src.flag() {
            ops.push(Operand::Param("bias", TensorType::f32([co])));
        }
        self.add("conv", Op::Conv2d(attrs), ops)
    }

    fn im2col(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() == 4 && t.dtype == DType::F32)?;
        let attrs = Im2Col {
            kernel: self.pair(1, 3),
            stride: self.small_pair(3),
            dilation: self.small_pair(2),
            padding: [0; 4].map(|_| {
                let p = self.src.below(2);
                self.ex(p)
            }),
        };
        self.add("patches", Op::Im2Col(attrs), vec![Operand::Node(x)])
    }

    /// A GEMM over a rank-3 value (patches, or anything else), with every epilogue form.
    fn gemm(&mut self) -> Option<NodeId> {
        let b = self.pick(|t| t.rank() == 3 && t.dtype == DType::F32)?;
        let [n, k, l] = self.dims(b)[..] else { return None };
        let groups = if k > 0 && self.src.flag() {
            self.divisor(k)
        } else {
            1
        };
        let m = groups * self.src.range(1, 7);
        let m = self.ex(m);
        let attrs = Gemm {
            groups,
            bias: self.src.flag(),
            residual: self.src.flag(),
            activation: match self.src.range(0, 6) {
                0 => Some(Activation::Relu),
                1 => Some(Activation::Sigmoid),
                2 => Some(Activation::LeakyRelu { alpha: 0.5 }),
                _ => None,
            },
        };
        let mut ops = vec![
            Operand::Param("weight", TensorType::f32([m, k / groups.max(1)])),
            Operand::Node(b),
        ];
        if attrs.bias {
            ops.push(Operand::Param("bias", TensorType::f32([m])));
        }
        if attrs.residual {
            ops.push(Operand::Input("residual", TensorType::f32([n, m, l])));
        }
        self.add("gemm", Op::Gemm(attrs), ops)
    }

    /// `rsqrt(x·x + ε)` with ε ≥ ½: well conditioned, so f32 and f64 (and the JIT) agree; a
    /// square root of a value near zero or below would only test rounding.
    fn rsqrt(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.dtype == DType::F32)?;
        let square = self.add(
            "square",
            Op::Binary(BinaryOp::Mul),
            vec![Operand::Node(x), Operand::Node(x)],
        )?;
        let epsilon = self.src.choose(&[0.5, 1.0])?;
        self.add("rsqrt", Op::Rsqrt { epsilon }, vec![Operand::Node(square)])
    }

    /// LRN across the channels of a value of rank ≥ 2, with AlexNet's or other constants.
    fn lrn(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() >= 2 && t.dtype == DType::F32)?;
        let size = self.src.range(1, 6);
        let size = self.ex(size);
        let (alpha, beta, bias) = self.src.choose(&[
            (1e-4, 0.75, 1.0),
            (0.5, 0.75, 2.0),
            (1.0, 1.5, 0.5),
            (0.25, -0.5, 1.0),
        ])?;
        let op = Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        };
        self.add("lrn", op, vec![Operand::Node(x)])
    }

    /// A mean over one to three increasing axes, with or without the reduced axes kept.
    fn reduce_mean(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() >= 1 && t.dtype == DType::F32)?;
        let rank = self.ty(x).rank();
        let first = self.src.below(rank);
        let mut axes = vec![first];
        for _ in 0..2 {
            let last = *axes.last()?;
            if last + 1 < rank && self.src.flag() {
                let next = last + 1 + self.src.below(rank - last - 1);
                axes.push(next);
            }
        }
        let axes = axes.into_iter().map(|a| self.ex(a)).collect();
        let op = Op::ReduceMean {
            axes,
            keepdims: self.src.flag(),
        };
        self.add("mean", op, vec![Operand::Node(x)])
    }

    fn conv_transpose2d(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() == 4)?;
        let c = self.dims(x)[1];
        let groups = self.groups(c);
        let co = self.out_channels(groups);
        let kernel = self.pair(1, 3);
        let stride = self.small_pair(3);
        let dilation = self.small_pair(2);
        let output_padding = [
            self.src.below(stride[0].max(dilation[0])),
            self.src.below(stride[1].max(dilation[1])),
        ];
        let output_padding = self.ex2(output_padding);
        let padding: [usize; 4] = match self.src.below(3) {
            0 => [0; 4],
            1 => [self.src.range(0, 1); 4],
            _ => std::array::from_fn(|_| self.src.range(0, 2)),
        };
        let padding = padding.map(|p| self.ex(p));
        let attrs = ConvTranspose2d {
            stride,
            dilation,
            padding,
            output_padding,
            groups,
        };
        let mut ops = vec![
            Operand::Node(x),
            Operand::Param(
                "weight",
                TensorType::f32([c, co.checked_div(groups).unwrap_or(0), kernel[0], kernel[1]]),
            ),
        ];
        if self.src.flag() {
            ops.push(Operand::Param("bias", TensorType::f32([co])));
        }
        self.add("deconv", Op::ConvTranspose2d(attrs), ops)
    }

    fn pool2d(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() == 4)?;
        let kind = match self.src.below(4) {
            0 => PoolKind::Max,
            1 => PoolKind::Avg {
                count_include_pad: false,
            },
            2 => PoolKind::Avg {
                count_include_pad: true,
            },
            _ => PoolKind::Sum,
        };
        let kernel = self.pair(1, 3);
        let stride = self.small_pair(3);
        let dilation = if self.src.below(4) == 3 {
            self.pair(1, 2)
        } else {
            [1, 1]
        };
        let dilation = self.ex2(dilation);
        // Padding must stay below the kernel extent.
        let max = [0, 1].map(|a| {
            shape::effective_kernel(kernel[a], dilation[a])
                .saturating_sub(1)
                .min(2)
        });
        let padding = self.padding(max);
        let ceil_mode = self.src.flag();
        let p = Pool2d {
            kind,
            kernel,
            stride,
            dilation,
            padding,
            ceil_mode,
        };
        self.add("pool", Op::Pool2d(p), vec![Operand::Node(x)])
    }

    fn global_or_adaptive_pool(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() == 4)?;
        let kind = if self.src.flag() {
            ReduceKind::Max
        } else {
            ReduceKind::Avg
        };
        let op = if self.src.flag() {
            Op::AdaptivePool {
                kind,
                output: self.pair(1, 4),
            }
        } else {
            Op::GlobalPool(kind)
        };
        self.add(op.name(), op, vec![Operand::Node(x)])
    }

    /// An axis of a rank-`rank` tensor, negative half the time.
    fn axis(&mut self, rank: usize) -> i64 {
        let a = self.src.below(2 * rank) as i64 - rank as i64;
        self.ex_i64(a)
    }

    fn softmax(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() >= 1)?;
        let axis = self.axis(self.ty(x).rank());
        let op = if self.src.flag() {
            Op::LogSoftmax { axis }
        } else {
            Op::Softmax { axis }
        };
        self.add(op.name(), op, vec![Operand::Node(x)])
    }

    fn flatten(&mut self) -> Option<NodeId> {
        let x = self.pick(|_| true)?;
        let rank = self.ty(x).rank();
        // Flatten's axis may also equal the rank.
        let axis = self.src.below(2 * rank + 1) as i64 - rank as i64;
        let axis = self.ex_i64(axis);
        self.add("flatten", Op::Flatten { axis }, vec![Operand::Node(x)])
    }

    /// `x` itself if it is `[N, K]`, else `x` flattened from axis 1.
    fn as_matrix(&mut self, x: NodeId) -> Option<NodeId> {
        if self.ty(x).rank() == 2 {
            Some(x)
        } else {
            self.add("flatten", Op::Flatten { axis: 1 }, vec![Operand::Node(x)])
        }
    }

    fn dense(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() >= 1)?;
        let x = self.as_matrix(x)?;
        let features = self.dims(x)[1];
        let out = self.src.range(1, 8);
        let out = self.ex(out);
        let mut ops = vec![
            Operand::Node(x),
            Operand::Param("weight", TensorType::f32([out, features])),
        ];
        if self.src.flag() {
            ops.push(Operand::Param("bias", TensorType::f32([out])));
        }
        self.add("dense", Op::Dense, ops)
    }

    fn matmul(&mut self) -> Option<NodeId> {
        let a = self.pick(|t| t.rank() >= 1)?;
        let ad = self.dims(a);
        let k = *ad.last()?;
        let b = match self.src.below(4) {
            0 => Operand::Param("rhs", TensorType::f32([k])),
            1 => {
                // Another value whose rows match, e.g. `x · xᵀ`-like products of branches.
                let n = self.pick(|t| t.rank() >= 2 && t.dims()[t.rank() - 2] == k)?;
                Operand::Node(n)
            }
            _ => {
                let n = self.src.range(1, 6);
                let n = self.ex(n);
                // Some or all of `a`'s batch dims (those before its last two).
                let nb = ad.len().saturating_sub(2);
                let batch = self.src.below(nb + 1);
                let mut d = ad[nb - batch..nb].to_vec();
                d.extend([k, n]);
                Operand::Param("rhs", TensorType::f32(d))
            }
        };
        let mut ops = vec![Operand::Node(a), b];
        if self.src.flag() {
            ops.swap(0, 1);
            if let Operand::Param(_, t) = &ops[0] {
                // The weight on the left: `[…, m, k]` so that it meets `a`'s rows.
                let m = self.src.range(1, 6);
                let m = self.ex(m);
                let d: Vec<usize> = match (t.rank(), ad.len()) {
                    (_, 1) => vec![m, k],
                    _ => vec![m, ad[ad.len() - 2]],
                };
                ops[0] = Operand::Param("lhs", TensorType::f32(d));
            }
        }
        self.add("matmul", Op::MatMul, ops)
    }

    fn reshape(&mut self) -> Option<NodeId> {
        let x = self.pick(|_| true)?;
        let xd = self.dims(x);
        let rank = self.src.range(1, 4);
        let mut rest = self.ty(x).shape.numel();
        let mut spec = Vec::with_capacity(rank);
        for _ in 1..rank {
            let divs: Vec<usize> = (1..=rest.min(MAX_SPATIAL))
                .filter(|d| rest.is_multiple_of(*d))
                .collect();
            let d = self.src.choose(&divs)?;
            spec.push(d as i64);
            rest /= d;
        }
        spec.push(rest as i64);
        // ONNX's special dims: `0` copies the input's dim, one `-1` is inferred.
        for (i, s) in spec.iter_mut().enumerate() {
            if xd.get(i) == Some(&(*s as usize)) && self.src.below(4) == 3 {
                *s = 0;
            }
        }
        if self.src.flag() {
            let i = self.src.below(spec.len());
            spec[i] = -1;
        }
        let spec = spec.into_iter().map(|s| self.ex_i64(s)).collect();
        self.add("reshape", Op::Reshape { shape: spec }, vec![Operand::Node(x)])
    }

    fn transpose(&mut self) -> Option<NodeId> {
        let x = self.pick(|_| true)?;
        let mut perm: Vec<usize> = (0..self.ty(x).rank()).collect();
        for i in (1..perm.len()).rev() {
            let j = self.src.below(i + 1);
            perm.swap(i, j);
        }
        let perm = perm.into_iter().map(|p| self.ex(p)).collect();
        self.add("transpose", Op::Transpose { perm }, vec![Operand::Node(x)])
    }

    fn binary(&mut self) -> Option<NodeId> {
        let op = match self.src.below(4) {
            0 => BinaryOp::Add,
            1 => BinaryOp::Sub,
            2 => BinaryOp::Mul,
            _ => BinaryOp::Div,
        };
        let x = self.pick(|_| true)?;
        let xt = self.ty(x).clone();
        let y = match self.src.below(4) {
            0 => Operand::Node(x),
            1 => {
                // Residual: another value of the same shape.
                let other = self.pick(|t| t.shape == xt.shape)?;
                Operand::Node(other)
            }
            2 => {
                // Any value that broadcasts with `x`.
                let other = self.pick(|t| shape::broadcast_shapes(t.dims(), xt.dims()).is_ok())?;
                Operand::Node(other)
            }
            _ => {
                // A weight of a broadcastable shape: some dims kept, others 1, leading dims dropped.
                let drop = self.src.below(xt.rank() + 1);
                let mut d = Vec::with_capacity(xt.rank() - drop);
                for &n in &xt.dims()[drop..] {
                    d.push(if self.src.flag() { 1 } else { n });
                }
                Operand::Param("weight", TensorType::f32(d))
            }
        };
        let mut ops = vec![Operand::Node(x), y];
        if self.src.flag() {
            ops.swap(0, 1);
        }
        let b = Op::Binary(op);
        self.add(b.name(), b, ops)
    }

    fn concat(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() >= 1)?;
        let xt = self.ty(x).clone();
        let axis = self.axis(xt.rank());
        let a = shape::normalize_axis(axis, xt.rank(), false).ok()?;
        let fits_with_x = |t: &TensorType| {
            t.rank() == xt.rank()
                && t.dims()
                    .iter()
                    .zip(xt.dims())
                    .enumerate()
                    .all(|(i, (p, q))| i == a || p == q)
        };
        let mut ops = vec![Operand::Node(x)];
        if self.src.flag() {
            // A fresh branch from `x`, as in an Inception block.
            let b = self.add("relu", Op::Activation(Activation::Relu), vec![Operand::Node(x)])?;
            ops.push(Operand::Node(b));
        }
        for _ in 0..self.src.below(3) {
            let other = self.pick(fits_with_x)?;
            ops.push(Operand::Node(other));
        }
        self.add("concat", Op::Concat { axis }, ops)
    }

    fn dropout(&mut self) -> Option<NodeId> {
        let x = self.pick(|_| true)?;
        let ratio = match self.src.below(3) {
            0 => 0.5,
            1 => self.src.choose(&[0.0, 0.1, 0.25, 0.75, 0.9])?,
            _ => f32::from(self.src.byte()) / 256.0,
        };
        let seed = if self.src.flag() { self.src.u64() } else { 0 };
        self.add("dropout", Op::Dropout { ratio, seed }, vec![Operand::Node(x)])
    }

    fn batch_norm(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() >= 2)?;
        let c = TensorType::f32([self.dims(x)[1]]);
        let epsilon = match self.src.below(3) {
            0 => 1e-5,
            1 => self.src.choose(&[1e-3, 0.0, 0.1, 1e-6])?,
            _ => f32::from(self.src.byte()) * 1e-4,
        };
        let ops = vec![
            Operand::Node(x),
            Operand::Param("weight", c.clone()),
            Operand::Param("bias", c.clone()),
            Operand::Buffer("running_mean", c.clone()),
            Operand::Buffer("running_var", c),
        ];
        self.add(
            "bn",
            Op::BatchNorm {
                epsilon,
                activation: None,
            },
            ops,
        )
    }

    /// Extreme mode only: zero insertion and padding (a negative amount crops).
    fn dilate_pad(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() == 4 && t.dtype == DType::F32)?;
        let stride = self.small_pair(3);
        let padding: [i64; 4] = std::array::from_fn(|_| self.src.range(0, 4) as i64 - 2);
        let padding = padding.map(|p| self.ex_i64(p));
        let op = Op::Train(TrainOp::DilatePad { stride, padding });
        self.add("dilate_pad", op, vec![Operand::Node(x)])
    }

    /// Extreme mode only: a convolution kernel rotated by 180° (`groups` divides both
    /// channel dims).
    fn rot180(&mut self) -> Option<NodeId> {
        let x = self.pick(|t| t.rank() == 4 && t.dtype == DType::F32)?;
        let groups = self.groups(1);
        self.add(
            "rot180",
            Op::Train(TrainOp::Rot180 { groups }),
            vec![Operand::Node(x)],
        )
    }

    fn loss(&mut self) -> Option<NodeId> {
        let kind = match self.src.below(3) {
            0 => LossKind::Mse,
            1 => LossKind::CrossEntropy,
            _ => LossKind::Nll,
        };
        let x = self.pick(|t| t.rank() >= 1)?;
        let (pred, target) = match kind {
            LossKind::Mse => {
                let xt = self.ty(x).clone();
                let target = if self.src.flag() {
                    Operand::Node(self.pick(|t| t.shape == xt.shape)?)
                } else {
                    Operand::Input("target", xt)
                };
                (x, target)
            }
            LossKind::CrossEntropy | LossKind::Nll => {
                let mut z = self.as_matrix(x)?;
                if kind == LossKind::Nll && self.src.flag() {
                    let axis = if self.src.flag() { 1 } else { -1 };
                    z = self.add("log_softmax", Op::LogSoftmax { axis }, vec![Operand::Node(z)])?;
                }
                let zd = self.dims(z);
                let target = if self.src.flag() {
                    TensorType::i32([zd[0]])
                } else {
                    TensorType::f32(zd)
                };
                (z, Operand::Input("target", target))
            }
        };
        let op = Op::Loss(kind);
        self.add(op.name(), op, vec![Operand::Node(pred), target])
    }

    /// Outputs: every computed node that nothing reads, and now and then one more.
    fn mark_outputs(&mut self) {
        let computed: Vec<NodeId> = self
            .g
            .topo_order()
            .into_iter()
            .filter(|&n| self.g.node(n).op.source_type().is_none())
            .collect();
        for &n in &computed {
            if self.g.users(n).is_empty() {
                let _ = self.g.mark_output(n);
            }
        }
        if self.src.below(4) == 3
            && let Some(n) = self.src.choose(&computed)
        {
            let _ = self.g.mark_output(n);
        }
        if self.g.outputs().is_empty()
            && let Some(&n) = self.values.first()
        {
            let _ = self.g.mark_output(n);
        }
    }
}
