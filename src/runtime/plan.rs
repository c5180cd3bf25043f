//! Memory planning: every buffer gets an offset in one arena. Persistent buffers (parameters,
//! inputs, constants, index tables) come first; temporaries share the rest by liveness, each
//! placed at the lowest offset free over its live range (largest first).

use crate::kernels::{Access, BufId, BufKind, KExpr, KernelBody, Program, RowMap};
use std::fmt::Write;

/// Buffers start at multiples of 16 elements (64 bytes) from the start of the arena.
const ALIGN: usize = 16;

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Element offset of each buffer.
    pub offsets: Vec<usize>,
    /// First and last kernel touching each temp buffer (`None` for persistent ones or unused).
    pub live: Vec<Option<(usize, usize)>>,
    pub persistent_elems: usize,
    /// Arena size in elements.
    pub total_elems: usize,
}

impl Plan {
    pub fn peak_bytes(&self) -> usize {
        self.total_elems * 4
    }
}

fn round_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

fn access_bufs(a: &Access, out: &mut Vec<BufId>) {
    out.push(a.buf);
    match &a.rows {
        RowMap::Table { table } => out.push(*table),
        RowMap::Indirect { ids, .. } => out.push(*ids),
        RowMap::Affine { .. } => {}
    }
}

/// Buffers a kernel reads or writes.
pub fn kernel_buffers(body: &KernelBody) -> Vec<BufId> {
    let mut v = vec![];
    match body {
        KernelBody::Loop(l) => {
            for n in &l.nodes {
                match &n.expr {
                    KExpr::Load(a) => access_bufs(a, &mut v),
                    KExpr::OneHot { ids, .. } => access_bufs(ids, &mut v),
                    _ => {}
                }
            }
            for s in &l.stores {
                access_bufs(&s.access, &mut v);
            }
        }
        KernelBody::ColReduce { input, out, .. } => {
            access_bufs(input, &mut v);
            access_bufs(out, &mut v);
        }
        KernelBody::MatMul(mm) => {
            v.extend([mm.a.buf, mm.b.buf, mm.c.buf]);
            if let Some(bias) = &mm.bias {
                access_bufs(bias, &mut v);
            }
        }
        KernelBody::ScatterAdd { ids, src, out, .. } => v.extend([*ids, *src, *out]),
    }
    v
}

pub fn plan(p: &Program) -> Plan {
    let nb = p.buffers.len();
    let nk = p.kernels.len();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; nb];
    for (k, kernel) in p.kernels.iter().enumerate() {
        for b in kernel_buffers(&kernel.body) {
            let e = &mut live[b.index()];
            *e = Some(match *e {
                None => (k, k),
                Some((s, _)) => (s, k),
            });
        }
    }
    for o in &p.outputs {
        if let Some((s, _)) = live[o.buf.index()] {
            live[o.buf.index()] = Some((s, nk));
        }
    }
    let mut offsets = vec![0usize; nb];
    let mut next = 0usize;
    for (i, b) in p.buffers.iter().enumerate() {
        if b.kind != BufKind::Temp {
            offsets[i] = next;
            next = round_up(next + b.len);
            live[i] = None;
        }
    }
    let persistent = next;
    let mut temps: Vec<usize> = (0..nb)
        .filter(|&i| p.buffers[i].kind == BufKind::Temp && live[i].is_some())
        .collect();
    temps.sort_by_key(|&i| (std::cmp::Reverse(p.buffers[i].len), i));
    // Placed temps: (offset, len, live range).
    let mut placed: Vec<(usize, usize, (usize, usize))> = vec![];
    let mut end = persistent;
    for i in temps {
        let len = round_up(p.buffers[i].len.max(1));
        let Some((s, e)) = live[i] else { continue };
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, (ps, pe))| *ps <= e && s <= *pe)
            .map(|&(o, l, _)| (o, o + l))
            .collect();
        busy.sort();
        let mut off = persistent;
        for (bs, be) in busy {
            if off + len <= bs {
                break;
            }
            off = off.max(be);
        }
        offsets[i] = off;
        end = end.max(off + len);
        placed.push((off, len, (s, e)));
    }
    Plan {
        offsets,
        live,
        persistent_elems: persistent,
        total_elems: end,
    }
}

/// The plan as text (`--stage plan`).
pub fn print_plan(p: &Program, plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "plan {}: arena {} bytes (persistent {} bytes, temporaries {} bytes)",
        p.name,
        plan.peak_bytes(),
        plan.persistent_elems * 4,
        (plan.total_elems - plan.persistent_elems) * 4
    );
    for (i, b) in p.buffers.iter().enumerate() {
        let live = match plan.live[i] {
            Some((a, z)) => format!(" live k{a}..k{z}"),
            None if b.kind == BufKind::Temp => " unused".to_string(),
            None => " persistent".to_string(),
        };
        let _ = writeln!(
            s,
            "  b{i} @{} {} bytes{live} ; {}",
            plan.offsets[i] * 4,
            b.len * 4,
            b.label
        );
    }
    s
}
