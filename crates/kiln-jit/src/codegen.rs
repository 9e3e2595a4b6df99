//! Cranelift plumbing: the host ISA, the JIT module, and `Emitter`, a thin layer over
//! `FunctionBuilder` with the few shapes every kernel is made of — counted loops (top-tested,
//! as the Cranelift notes found best), arena addressing, f32/f32x4 arithmetic and `exp`.

use crate::JitError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

/// The host ISA with every feature `cranelift-native` detects. Refuses hosts without AVX and
/// FMA: without them Cranelift lowers `fma` to a libcall that runs ~90× slower.
pub fn host_isa(opt_level: &str) -> Result<OwnedTargetIsa, JitError> {
    let mut fb = settings::builder();
    for (k, v) in [
        ("opt_level", opt_level),
        ("is_pic", "false"),
        ("use_colocated_libcalls", "false"),
    ] {
        fb.set(k, v)
            .map_err(|e| JitError::Codegen(format!("setting {k}={v}: {e}")))?;
    }
    let ib = cranelift_native::builder().map_err(|e| JitError::UnsupportedHost(e.to_string()))?;
    let isa = ib
        .finish(settings::Flags::new(fb))
        .map_err(|e| JitError::Codegen(format!("building the host ISA: {e}")))?;
    let flags = isa.isa_flags();
    let has = |name: &str| flags.iter().any(|f| f.name == name && f.as_bool() == Some(true));
    if isa.triple().architecture.to_string() == "x86_64" && !(has("has_avx") && has("has_fma")) {
        return Err(JitError::UnsupportedHost(
            "the JIT needs a CPU with AVX and FMA".into(),
        ));
    }
    Ok(isa)
}

/// A fresh JIT module for the host.
pub fn new_module(opt_level: &str) -> Result<JITModule, JitError> {
    let isa = host_isa(opt_level)?;
    Ok(JITModule::new(JITBuilder::with_isa(isa, default_libcall_names())))
}

/// Kernels have the signature `fn(arena: *mut u8, begin: i64, end: i64)`: they compute the
/// part `[begin, end)` of their outermost parallel loop over the arena.
pub fn kernel_signature(module: &JITModule) -> cranelift_codegen::ir::Signature {
    let mut sig = module.make_signature();
    for _ in 0..3 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// Defines the function `id` with a body written by `body`, which receives the emitter and the
/// function's parameters. Returns the Cranelift IR text and the machine code when `keep_code`
/// is set.
pub fn define(
    module: &mut JITModule,
    id: FuncId,
    sig: cranelift_codegen::ir::Signature,
    keep_code: bool,
    body: impl FnOnce(&mut Emitter, &[Value], &mut JITModule),
) -> Result<Option<(String, Vec<u8>)>, JitError> {
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    let frontend_config = module.target_config();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let mut e = Emitter { b };
        body(&mut e, &params, module);
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(frontend_config);
    }
    let clif = keep_code.then(|| ctx.func.display().to_string());
    module
        .define_function(id, &mut ctx)
        .map_err(|e| JitError::Codegen(format!("defining a kernel: {e:?}")))?;
    let code = match (clif, ctx.compiled_code()) {
        (Some(text), Some(cc)) => Some((text, cc.code_buffer().to_vec())),
        _ => None,
    };
    module.clear_context(&mut ctx);
    Ok(code)
}

/// Declares a kernel function named `name`.
pub fn declare_kernel(module: &mut JITModule, name: &str) -> Result<FuncId, JitError> {
    let sig = kernel_signature(module);
    module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(|e| JitError::Codegen(format!("declaring {name}: {e}")))
}

/// Builds kernel bodies. Every address is `arena + byte offset`, with offsets fixed at compile
/// time by the memory plan, so every access is in bounds by construction.
pub struct Emitter<'a> {
    pub b: FunctionBuilder<'a>,
}

pub fn mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Flags of a `bitcast`, which accepts only an endianness.
pub fn lanes() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

impl Emitter<'_> {
    pub fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub fn fconst(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    pub fn vconst(&mut self, v: f32) -> Value {
        let s = self.fconst(v);
        self.b.ins().splat(F32X4, s)
    }

    /// A constant of type `ty` (`F32` or `F32X4`).
    pub fn constant(&mut self, ty: Type, v: f32) -> Value {
        if ty == F32X4 {
            self.vconst(v)
        } else {
            self.fconst(v)
        }
    }

    /// `base + index·scale + offset` as an address.
    pub fn addr(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let s = self.b.ins().imul_imm_s(index, scale);
        self.b.ins().iadd(base, s)
    }

    /// Address of f32 element `index` of the tensor at byte `offset` in the arena.
    pub fn elem(&mut self, arena: Value, offset: usize, index: Value) -> Value {
        let base = self.b.ins().iadd_imm_s(arena, offset as i64);
        self.addr(base, index, 4)
    }

    pub fn load(&mut self, ty: Type, addr: Value) -> Value {
        self.b.ins().load(ty, mem(), addr, 0)
    }

    pub fn store(&mut self, v: Value, addr: Value) {
        self.b.ins().store(mem(), v, addr, 0);
    }

    /// `for i in (lo..hi).step_by(step) { body(i) }` as a top-tested loop.
    pub fn for_range(&mut self, lo: Value, hi: Value, step: i64, mut body: impl FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::from(lo)]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let c = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(c, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[BlockArg::from(next)]);
        self.b.switch_to_block(exit);
    }

    /// `for i in lo..hi` with constant bounds.
    pub fn for_const(&mut self, lo: i64, hi: i64, body: impl FnMut(&mut Self, Value)) {
        let (l, h) = (self.iconst(lo), self.iconst(hi));
        self.for_range(l, h, 1, body);
    }

    /// Runs `body` only when `cond` (an i8 from `icmp`) holds.
    pub fn if_then(&mut self, cond: Value, body: impl FnOnce(&mut Self)) {
        let then = self.b.create_block();
        let join = self.b.create_block();
        self.b.ins().brif(cond, then, &[], join, &[]);
        self.b.switch_to_block(then);
        body(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
    }

    /// A mutable f32 (or f32x4) accumulator as a Cranelift variable.
    pub fn var(&mut self, ty: Type, init: Value) -> cranelift_frontend::Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// `max(x, 0)` as one `maxps`/`maxss` (the `bitselect` pattern; see the Cranelift notes).
    pub fn relu(&mut self, ty: Type, x: Value) -> Value {
        let zero = self.constant(ty, 0.0);
        self.select_lt(ty, x, zero, zero, x)
    }

    /// `if a < b { t } else { f }`, lane-wise for vectors.
    pub fn select_lt(&mut self, ty: Type, a: Value, b: Value, t: Value, f: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, a, b);
        if ty == F32X4 {
            let mask = self.b.ins().bitcast(F32X4, lanes(), c);
            self.b.ins().bitselect(mask, t, f)
        } else {
            self.b.ins().select(c, t, f)
        }
    }

    /// `max(a, b)`; a NaN in `a` is returned, a NaN in `b` is not (use `max_nan` to propagate both).
    pub fn max(&mut self, ty: Type, a: Value, b: Value) -> Value {
        self.select_lt(ty, a, b, b, a)
    }

    /// `min(a, b)`; a NaN in `a` is returned, a NaN in `b` is not.
    pub fn min(&mut self, ty: Type, a: Value, b: Value) -> Value {
        self.select_lt(ty, b, a, b, a)
    }

    /// Scalar `max(acc, v)` where a NaN in either wins, as PyTorch's max reductions do.
    pub fn max_nan(&mut self, acc: Value, v: Value) -> Value {
        let m = self.max(F32, acc, v);
        let v_nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
        self.b.ins().select(v_nan, v, m)
    }

    /// `eˣ` for f32 or f32x4: [`Emitter::exp_clamped`], then `+∞` above `ln(f32::MAX)` and 0
    /// below the smallest subnormal's log; relative error below 1e-7 on `[-87, 88]`,
    /// `1.6e-38` between −103.97 and −87 (no subnormals), NaN for NaN. `Simd::exp` of the Rust
    /// tiers, operation for operation.
    pub fn exp(&mut self, ty: Type, x_in: Value) -> Value {
        let r = self.exp_clamped(ty, x_in);
        // beyond the clamp: overflow to +∞ and underflow to 0, as the true function does
        let r = self.exp_overflow(ty, x_in, r);
        let under = self.constant(ty, crate::simd::EXP_UNDERFLOW);
        let zero = self.constant(ty, 0.0);
        self.select_lt(ty, x_in, under, zero, r)
    }

    /// `r` (`eˣ` clamped), or `+∞` where `x` is above `ln(f32::MAX)`.
    pub fn exp_overflow(&mut self, ty: Type, x: Value, r: Value) -> Value {
        let over = self.constant(ty, crate::simd::EXP_OVERFLOW);
        let inf = self.constant(ty, f32::INFINITY);
        self.select_lt(ty, over, x, inf, r)
    }

    /// `eˣ` of `x` clamped to `[-87, 88]`: range reduction `x = n·ln2 + r` (two FMAs), a
    /// degree-7 polynomial for `eʳ`, and `2ⁿ` built in the exponent bits (`Simd::exp_clamped`,
    /// operation for operation). Sigmoid's `1/(1 + e⁻ˣ)` needs no more.
    pub fn exp_clamped(&mut self, ty: Type, x_in: Value) -> Value {
        let lo = self.constant(ty, -87.0);
        let hi = self.constant(ty, 88.0);
        let x = self.max(ty, x_in, lo);
        let x = self.min(ty, x, hi);
        let log2e = self.constant(ty, std::f32::consts::LOG2_E);
        let t = self.b.ins().fmul(x, log2e);
        let n = self.b.ins().nearest(t);
        let ln2_hi = self.constant(ty, -crate::simd::LN2_HI);
        let ln2_lo = self.constant(ty, -crate::simd::LN2_LO);
        let r = self.b.ins().fma(n, ln2_hi, x);
        let r = self.b.ins().fma(n, ln2_lo, r);
        // Horner: Σ r^k / k!, k = 0..7
        let coeffs = [
            1.0 / 5040.0,
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ];
        let mut p = self.constant(ty, coeffs[0]);
        for &c in &coeffs[1..] {
            let cc = self.constant(ty, c);
            p = self.b.ins().fma(p, r, cc);
        }
        let ity = if ty == F32X4 { I32X4 } else { I32 };
        let ni = self.b.ins().fcvt_to_sint_sat(ity, n);
        let bias = self.b.ins().iconst(I32, 127);
        let bias = if ty == F32X4 {
            self.b.ins().splat(I32X4, bias)
        } else {
            bias
        };
        let ni = self.b.ins().iadd(ni, bias);
        let bits = self.b.ins().ishl_imm_s(ni, 23);
        let scale = self.b.ins().bitcast(ty, lanes(), bits);
        self.b.ins().fmul(p, scale)
    }
}
