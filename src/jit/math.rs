//! Elementwise math on `f32x4` values: Cephes-style polynomials for exp, log and tanh, and
//! a rational erf for exact GELU. Everything is vector code; the scalar tail
//! runs the same code on a vector whose lane 0 matters.

use crate::ir::{BinaryOp, UnaryOp};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4};
use cranelift_codegen::ir::{condcodes::FloatCC, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

pub struct Math {
    pub fma: bool,
}

fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl Math {
    pub fn splat(&self, b: &mut FunctionBuilder, v: f32) -> Value {
        let s = b.ins().f32const(v);
        b.ins().splat(F32X4, s)
    }
    fn isplat(&self, b: &mut FunctionBuilder, v: i32) -> Value {
        let s = b.ins().iconst(I32, v as i64);
        b.ins().splat(I32X4, s)
    }
    /// `a * b + c`.
    pub fn madd(&self, b: &mut FunctionBuilder, x: Value, y: Value, z: Value) -> Value {
        if self.fma {
            b.ins().fma(x, y, z)
        } else {
            let p = b.ins().fmul(x, y);
            b.ins().fadd(p, z)
        }
    }
    /// Horner evaluation of `coeffs[0] x^n + ... + coeffs[n]`.
    fn poly(&self, b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.splat(b, coeffs[0]);
        for &c in &coeffs[1..] {
            let cv = self.splat(b, c);
            acc = self.madd(b, acc, x, cv);
        }
        acc
    }
    pub fn to_f(&self, b: &mut FunctionBuilder, mask: Value) -> Value {
        b.ins().bitcast(F32X4, le(), mask)
    }
    fn to_i(&self, b: &mut FunctionBuilder, v: Value) -> Value {
        b.ins().bitcast(I32X4, le(), v)
    }
    /// `mask ? x : 0` for an `fcmp` mask.
    fn keep(&self, b: &mut FunctionBuilder, mask: Value, x: Value) -> Value {
        let m = self.to_f(b, mask);
        b.ins().band(m, x)
    }

    pub fn exp(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let hi = self.splat(b, 88.3);
        let lo = self.splat(b, -87.3);
        // fmin/fmax keep NaN, so NaN inputs stay NaN.
        let x = b.ins().fmin(x, hi);
        let x = b.ins().fmax(x, lo);
        // Round x / ln2 to nearest with the 1.5 * 2^23 trick: no SSE4.1 rounding needed.
        let magic = self.splat(b, 12_582_912.0);
        let log2e = self.splat(b, std::f32::consts::LOG2_E);
        let kf = self.madd(b, x, log2e, magic);
        let k = b.ins().fsub(kf, magic);
        let c1 = self.splat(b, -0.693_359_4);
        let c2 = self.splat(b, 2.121_944_4e-4);
        let r = self.madd(b, k, c1, x);
        let r = self.madd(b, k, c2, r);
        let p = self.poly(
            b,
            r,
            &[
                1.987_569_1e-4,
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                0.166_666_65,
                0.5,
            ],
        );
        let r2 = b.ins().fmul(r, r);
        let one = self.splat(b, 1.0);
        let y = self.madd(b, p, r2, r);
        let y = b.ins().fadd(y, one);
        // 2^k from the integer bits of kf.
        let kb = self.to_i(b, kf);
        let mb = self.isplat(b, 0x4B40_0000 - 127);
        let e = b.ins().isub(kb, mb);
        let e = b.ins().ishl_imm_s(e, 23);
        let pow = self.to_f(b, e);
        b.ins().fmul(y, pow)
    }

    pub fn log(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let zero = self.splat(b, 0.0);
        let xi = self.to_i(b, x);
        let e = b.ins().sshr_imm_s(xi, 23);
        let bias = self.isplat(b, 126);
        let e = b.ins().isub(e, bias);
        let mmask = self.isplat(b, 0x807F_FFFFu32 as i32);
        let half = self.isplat(b, 0x3F00_0000);
        let m = b.ins().band(xi, mmask);
        let m = b.ins().bor(m, half);
        let m = self.to_f(b, m);
        let sqrthf = self.splat(b, std::f32::consts::FRAC_1_SQRT_2);
        let lt = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
        // e -= 1 where m < sqrt(1/2) (the mask is all ones there, i.e. -1).
        let e = b.ins().iadd(e, lt);
        let one = self.splat(b, 1.0);
        let mm = self.keep(b, lt, m);
        let m1 = b.ins().fsub(m, one);
        let m = b.ins().fadd(m1, mm);
        let z = b.ins().fmul(m, m);
        let p = self.poly(
            b,
            m,
            &[
                7.037_683_6e-2,
                -1.151_461_1e-1,
                1.167_699_9e-1,
                -1.242_014_1e-1,
                1.424_932_3e-1,
                -1.666_805_8e-1,
                2.000_071_4e-1,
                -2.499_999_4e-1,
                3.333_333e-1,
            ],
        );
        let y = b.ins().fmul(p, m);
        let y = b.ins().fmul(y, z);
        let ef = b.ins().fcvt_from_sint(F32X4, e);
        let c2 = self.splat(b, -2.121_944_4e-4);
        let y = self.madd(b, ef, c2, y);
        let mhalf = self.splat(b, -0.5);
        let y = self.madd(b, z, mhalf, y);
        let x2 = b.ins().fadd(m, y);
        let c1 = self.splat(b, 0.693_359_4);
        let res = self.madd(b, ef, c1, x2);
        // x == 0 -> -inf, x < 0 or NaN -> NaN, x == inf -> inf.
        let ninf = self.splat(b, f32::NEG_INFINITY);
        let nan = self.splat(b, f32::NAN);
        let inf = self.splat(b, f32::INFINITY);
        let is0 = b.ins().fcmp(FloatCC::Equal, x, zero);
        let is0 = self.to_f(b, is0);
        let res = b.ins().bitselect(is0, ninf, res);
        let bad = b.ins().fcmp(FloatCC::UnorderedOrLessThan, x, zero);
        let bad = self.to_f(b, bad);
        let res = b.ins().bitselect(bad, nan, res);
        let isinf = b.ins().fcmp(FloatCC::Equal, x, inf);
        let isinf = self.to_f(b, isinf);
        b.ins().bitselect(isinf, inf, res)
    }

    pub fn recip(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let one = self.splat(b, 1.0);
        b.ins().fdiv(one, x)
    }

    pub fn sigmoid(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let nx = b.ins().fneg(x);
        let e = self.exp(b, nx);
        let one = self.splat(b, 1.0);
        let d = b.ins().fadd(one, e);
        b.ins().fdiv(one, d)
    }

    fn abs(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let m = self.isplat(b, 0x7FFF_FFFF);
        let m = self.to_f(b, m);
        b.ins().band(x, m)
    }

    pub fn tanh(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let ax = self.abs(b, x);
        // Small |x|: odd polynomial (no cancellation).
        let z = b.ins().fmul(x, x);
        let p = self.poly(
            b,
            z,
            &[
                -5.704_988_7e-3,
                2.063_909e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328e-1,
            ],
        );
        let pz = b.ins().fmul(p, z);
        let small = self.madd(b, pz, x, x);
        // Large |x|: 1 - 2 / (exp(2|x|) + 1), with the sign of x.
        let two = self.splat(b, 2.0);
        let one = self.splat(b, 1.0);
        let e = b.ins().fmul(ax, two);
        let e = self.exp(b, e);
        let d = b.ins().fadd(e, one);
        let q = b.ins().fdiv(two, d);
        let big = b.ins().fsub(one, q);
        let sign = self.splat(b, -0.0);
        let sign = b.ins().band(x, sign);
        let big = b.ins().bor(big, sign);
        let lim = self.splat(b, 0.625);
        let is_small = b.ins().fcmp(FloatCC::LessThan, ax, lim);
        let is_small = self.to_f(b, is_small);
        b.ins().bitselect(is_small, small, big)
    }

    /// erf(x) as an odd rational function of x on [-4, 4] (clamped outside, where erf is
    /// +-1 in f32): absolute error below 1e-7, one division and no exp.
    fn erf(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let hi = self.splat(b, 4.0);
        let lo = self.splat(b, -4.0);
        let x = b.ins().fmin(x, hi);
        let x = b.ins().fmax(x, lo);
        let x2 = b.ins().fmul(x, x);
        let p = self.poly(
            b,
            x2,
            &[
                -2.726_142_4e-10,
                2.770_681_5e-8,
                -2.101_024e-6,
                -5.692_506_2e-5,
                -7.349_906_4e-4,
                -2.954_6e-3,
                -1.609_603_3e-2,
            ],
        );
        let p = b.ins().fmul(p, x);
        let q = self.poly(
            b,
            x2,
            &[
                -1.456_607_15e-5,
                -2.133_740_5e-4,
                -1.682_827e-3,
                -7.373_329_3e-3,
                -1.426_473_9e-2,
            ],
        );
        b.ins().fdiv(p, q)
    }

    /// Standard normal CDF: 0.5 + 0.5 erf(x / sqrt 2) (absolute error ~1e-7, which is what
    /// GELU, x Phi(x), needs).
    fn phi_cdf(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let c = self.splat(b, std::f32::consts::FRAC_1_SQRT_2);
        let a = b.ins().fmul(x, c);
        let e = self.erf(b, a);
        let half = self.splat(b, 0.5);
        self.madd(b, e, half, half)
    }

    pub fn unary(&self, b: &mut FunctionBuilder, op: &UnaryOp, x: Value) -> Value {
        match op {
            UnaryOp::Neg => b.ins().fneg(x),
            UnaryOp::StopGradient => x,
            UnaryOp::Exp => self.exp(b, x),
            UnaryOp::Log => self.log(b, x),
            UnaryOp::Sqrt => b.ins().sqrt(x),
            UnaryOp::Rsqrt => {
                let s = b.ins().sqrt(x);
                self.recip(b, s)
            }
            UnaryOp::Recip => self.recip(b, x),
            UnaryOp::Tanh => self.tanh(b, x),
            UnaryOp::Sigmoid => self.sigmoid(b, x),
            UnaryOp::Relu => {
                let zero = self.splat(b, 0.0);
                let gt = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                self.keep(b, gt, x)
            }
            UnaryOp::Gelu => {
                let p = self.phi_cdf(b, x);
                b.ins().fmul(x, p)
            }
            UnaryOp::GeluTanh => {
                let t = self.gelu_tanh_t(b, x);
                let one = self.splat(b, 1.0);
                let half = self.splat(b, 0.5);
                let hx = b.ins().fmul(x, half);
                let tp = b.ins().fadd(t, one);
                b.ins().fmul(hx, tp)
            }
            UnaryOp::Silu => {
                let s = self.sigmoid(b, x);
                b.ins().fmul(x, s)
            }
            UnaryOp::Scale { factor } => {
                let f = self.splat(b, factor.get() as f32);
                b.ins().fmul(x, f)
            }
            UnaryOp::AddScalar { value } => {
                let f = self.splat(b, value.get() as f32);
                b.ins().fadd(x, f)
            }
        }
    }

    fn gelu_tanh_t(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let c = self.splat(b, 0.044_715);
        let k = self.splat(b, 0.797_884_6);
        let x2 = b.ins().fmul(x, x);
        let x3 = b.ins().fmul(x2, x);
        let u = self.madd(b, c, x3, x);
        let u = b.ins().fmul(u, k);
        self.tanh(b, u)
    }

    pub fn binary(&self, b: &mut FunctionBuilder, op: &BinaryOp, x: Value, y: Value) -> Value {
        match op {
            BinaryOp::Add => b.ins().fadd(x, y),
            BinaryOp::Sub => b.ins().fsub(x, y),
            BinaryOp::Mul => b.ins().fmul(x, y),
            BinaryOp::Div => b.ins().fdiv(x, y),
            BinaryOp::ReluGrad => {
                let zero = self.splat(b, 0.0);
                let gt = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                self.keep(b, gt, y)
            }
            BinaryOp::GeluGrad => {
                // Phi(x) + x phi(x)
                let p = self.phi_cdf(b, x);
                let mh = self.splat(b, -0.5);
                let x2 = b.ins().fmul(x, x);
                let a = b.ins().fmul(x2, mh);
                let e = self.exp(b, a);
                let c = self.splat(b, 0.398_942_3);
                let pdf = b.ins().fmul(e, c);
                let g = self.madd(b, x, pdf, p);
                b.ins().fmul(g, y)
            }
            BinaryOp::GeluTanhGrad => {
                let t = self.gelu_tanh_t(b, x);
                let one = self.splat(b, 1.0);
                let half = self.splat(b, 0.5);
                let c3 = self.splat(b, 3.0 * 0.044_715);
                let k = self.splat(b, 0.797_884_6);
                let x2 = b.ins().fmul(x, x);
                let du = self.madd(b, c3, x2, one);
                let du = b.ins().fmul(du, k);
                let t2 = b.ins().fmul(t, t);
                let omt = b.ins().fsub(one, t2);
                let hx = b.ins().fmul(x, half);
                let a = b.ins().fmul(hx, omt);
                let a = b.ins().fmul(a, du);
                let opt = b.ins().fadd(one, t);
                let g = self.madd(b, opt, half, a);
                b.ins().fmul(g, y)
            }
            BinaryOp::SiluGrad => {
                let s = self.sigmoid(b, x);
                let one = self.splat(b, 1.0);
                let oms = b.ins().fsub(one, s);
                let t = self.madd(b, x, oms, one);
                let g = b.ins().fmul(s, t);
                b.ins().fmul(g, y)
            }
        }
    }

    /// Lane 0 of a vector as a scalar.
    pub fn lane0(&self, b: &mut FunctionBuilder, v: Value) -> Value {
        b.ins().extractlane(v, 0)
    }

    /// The scalar `s` in lane 0 (other lanes unspecified).
    pub fn from_scalar(&self, b: &mut FunctionBuilder, s: Value) -> Value {
        debug_assert!(b.func.dfg.value_type(s) == F32);
        b.ins().splat(F32X4, s)
    }
}
