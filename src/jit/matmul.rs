//! Generated GEMM microkernels (`MatPath::JitAxpy`, `MatPath::JitDot`).
//!
//! Same signature as every kernel; `bufs` holds the byte offsets of one batch item's `A`,
//! `B` and `C`, and `begin..end` is the range of row tiles, so the runtime splits rows
//! across threads. Shapes, strides and tile counts are compile-time constants. The loop over
//! column tiles is outside the loop over row tiles, so one strip of `B` stays in L1 while
//! the rows of `A` stream past it.

use super::{flags, Gen};
use crate::kernels::{MatMulKernel, MatPath};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{BlockArg, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Rows per tile of each microkernel form.
pub fn tile_rows(path: MatPath) -> usize {
    match path {
        MatPath::JitDot => 2,
        _ => 4,
    }
}

/// A loop body: `(builder, counter, carried values) -> next carried values`.
type LoopBody<'a> = dyn FnMut(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value> + 'a;

/// The values every microkernel starts from: its row-tile range, the addresses of `A`, `B`
/// and `C`, and a zero.
#[derive(Clone, Copy)]
struct Operands {
    begin: Value,
    end: Value,
    a: Value,
    b: Value,
    c: Value,
    zero: Value,
}

fn args(vals: &[Value]) -> Vec<BlockArg> {
    vals.iter().map(|v| BlockArg::from(*v)).collect()
}

impl Gen {
    /// A counted loop `for i in from..to step` around `body`, which receives the counter and
    /// the carried values and returns the next carried values. Returns the final carried.
    fn counted_loop(
        &self,
        b: &mut FunctionBuilder,
        from: Value,
        to: Value,
        step: i64,
        carried: &[(Value, cranelift_codegen::ir::Type)],
        body: &mut LoopBody,
    ) -> Vec<Value> {
        let head = b.create_block();
        let lp = b.create_block();
        let exit = b.create_block();
        b.append_block_param(head, I64);
        b.append_block_param(lp, I64);
        for &(_, t) in carried {
            b.append_block_param(head, t);
            b.append_block_param(lp, t);
            b.append_block_param(exit, t);
        }
        let init: Vec<Value> = std::iter::once(from)
            .chain(carried.iter().map(|c| c.0))
            .collect();
        b.ins().jump(head, &args(&init));
        b.switch_to_block(head);
        let hp = b.block_params(head).to_vec();
        let go = b.ins().icmp(IntCC::SignedLessThan, hp[0], to);
        b.ins().brif(go, lp, &args(&hp), exit, &args(&hp[1..]));
        b.switch_to_block(lp);
        let lpp = b.block_params(lp).to_vec();
        let next = body(b, lpp[0], &lpp[1..]);
        let i2 = b.ins().iadd_imm_s(lpp[0], step);
        let back: Vec<Value> = std::iter::once(i2).chain(next).collect();
        b.ins().jump(head, &args(&back));
        b.switch_to_block(exit);
        b.block_params(exit).to_vec()
    }

    pub(super) fn matmul(
        &mut self,
        b: &mut FunctionBuilder,
        mm: &MatMulKernel,
    ) -> Result<(), super::CodegenError> {
        let params = self.entry(b, 3);
        let at = Operands {
            begin: params[1],
            end: params[2],
            a: self.bufs[0],
            b: self.bufs[1],
            c: self.bufs[2],
            zero: b.ins().iconst(I64, 0),
        };
        match mm.path {
            MatPath::JitAxpy => self.axpy_tiles(b, mm, &at),
            MatPath::JitDot => self.dot_tiles(b, mm, &at),
            MatPath::Gemm => return Err(super::CodegenError::GemmNotGenerated),
        }
        b.ins().return_(&[]);
        Ok(())
    }

    /// `MatPath::JitAxpy`: 4x8 tiles of `C`, each row an axpy of `A[i, p]` and a row of `B`.
    fn axpy_tiles(&self, b: &mut FunctionBuilder, mm: &MatMulKernel, at: &Operands) {
        let Operands {
            begin,
            end,
            a: pa,
            b: pb,
            c: pc,
            zero,
        } = *at;
        let (ars, acs) = (4 * mm.a.rs, 4 * mm.a.cs);
        let (brs, bcs) = (4 * mm.b.rs, 4 * mm.b.cs);
        let crs = 4 * mm.c.rs;
        let k = mm.k as i64;
        let ntiles = b.ins().iconst(I64, (mm.n / 8) as i64);
        let unroll = [4i64, 2, 1].into_iter().find(|u| k % u == 0).unwrap_or(1);
        let kend = b.ins().iconst(I64, k);
        self.counted_loop(b, zero, ntiles, 1, &[], &mut |b, jt, _| {
            let joff = b.ins().imul_imm_s(jt, 8 * bcs);
            let bcol = b.ins().iadd(pb, joff);
            self.counted_loop(b, begin, end, 1, &[], &mut |b, it, _| {
                let aoff = b.ins().imul_imm_s(it, 4 * ars);
                let arow = b.ins().iadd(pa, aoff);
                let z = self.math.splat(b, 0.0);
                let mut carried = vec![(arow, I64), (bcol, I64)];
                carried.extend(std::iter::repeat_n((z, F32X4), 8));
                let out = self.counted_loop(b, zero, kend, unroll, &carried, &mut |b, _, c| {
                    let (mut ap, mut bp) = (c[0], c[1]);
                    let mut acc = c[2..].to_vec();
                    for _ in 0..unroll {
                        let b0 = b.ins().load(F32X4, flags(), bp, 0);
                        let b1 = b.ins().load(F32X4, flags(), bp, 4 * bcs as i32);
                        for r in 0..4 {
                            let s = b.ins().load(F32, flags(), ap, (r * ars) as i32);
                            let av = b.ins().splat(F32X4, s);
                            let r = r as usize;
                            acc[2 * r] = self.math.madd(b, av, b0, acc[2 * r]);
                            acc[2 * r + 1] = self.math.madd(b, av, b1, acc[2 * r + 1]);
                        }
                        ap = b.ins().iadd_imm_s(ap, acs);
                        bp = b.ins().iadd_imm_s(bp, brs);
                    }
                    let mut next = vec![ap, bp];
                    next.extend(acc);
                    next
                });
                let coff = b.ins().imul_imm_s(it, 4 * crs);
                let crow = b.ins().iadd(pc, coff);
                let cj = b.ins().imul_imm_s(jt, 32);
                let cp = b.ins().iadd(crow, cj);
                let alpha = (mm.alpha != 1.0).then(|| self.math.splat(b, mm.alpha));
                for r in 0..4 {
                    let o = (r * crs) as i32;
                    for h in 0..2 {
                        let mut v = out[2 + 2 * r as usize + h];
                        if let Some(al) = alpha {
                            v = b.ins().fmul(v, al);
                        }
                        b.ins().store(flags(), v, cp, o + 16 * h as i32);
                    }
                }
                vec![]
            });
            vec![]
        });
    }

    /// `MatPath::JitDot`: 2x4 tiles of `C`, each element a 4-wide dot product of a row of `A`
    /// and a column of `B`.
    fn dot_tiles(&self, b: &mut FunctionBuilder, mm: &MatMulKernel, at: &Operands) {
        let Operands {
            begin,
            end,
            a: pa,
            b: pb,
            c: pc,
            zero,
        } = *at;
        let ars = 4 * mm.a.rs;
        let bcs = 4 * mm.b.cs;
        let crs = 4 * mm.c.rs;
        let k = mm.k as i64;
        let ntiles = b.ins().iconst(I64, (mm.n / 4) as i64);
        let kbytes = b.ins().iconst(I64, 4 * k);
        self.counted_loop(b, zero, ntiles, 1, &[], &mut |b, jt, _| {
            let joff = b.ins().imul_imm_s(jt, 4 * bcs);
            let bcol = b.ins().iadd(pb, joff);
            self.counted_loop(b, begin, end, 1, &[], &mut |b, it, _| {
                let aoff = b.ins().imul_imm_s(it, 2 * ars);
                let arow = b.ins().iadd(pa, aoff);
                let z = self.math.splat(b, 0.0);
                let carried = vec![(z, F32X4); 8];
                let acc = self.counted_loop(b, zero, kbytes, 16, &carried, &mut |b, q, c| {
                    let ap = b.ins().iadd(arow, q);
                    let bp = b.ins().iadd(bcol, q);
                    let a0 = b.ins().load(F32X4, flags(), ap, 0);
                    let a1 = b.ins().load(F32X4, flags(), ap, ars as i32);
                    let mut acc = c.to_vec();
                    for j in 0..4 {
                        let bv = b.ins().load(F32X4, flags(), bp, (j * bcs) as i32);
                        acc[j as usize] = self.math.madd(b, a0, bv, acc[j as usize]);
                        acc[4 + j as usize] = self.math.madd(b, a1, bv, acc[4 + j as usize]);
                    }
                    acc
                });
                let coff = b.ins().imul_imm_s(it, 2 * crs);
                let crow = b.ins().iadd(pc, coff);
                let cj = b.ins().imul_imm_s(jt, 16);
                let cp = b.ins().iadd(crow, cj);
                for r in 0..2 {
                    for j in 0..4 {
                        let v = acc[r * 4 + j];
                        let mut s = b.ins().extractlane(v, 0);
                        for l in 1..4u8 {
                            let x = b.ins().extractlane(v, l);
                            s = b.ins().fadd(s, x);
                        }
                        if mm.alpha != 1.0 {
                            let al = b.ins().f32const(mm.alpha);
                            s = b.ins().fmul(s, al);
                        }
                        let o = (r as i64 * crs + 4 * j as i64) as i32;
                        b.ins().store(flags(), s, cp, o);
                    }
                }
                vec![]
            });
            vec![]
        });
    }
}
