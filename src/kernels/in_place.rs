//! Outputs stored straight into the parameter they replace.
//!
//! A run that ends by copying output `o` over parameter `p` (a training step's update) can
//! instead have the kernel that computes `o` store into `p`'s buffer, which saves the output
//! buffer and the copy. That is safe when:
//! - one loop kernel `K` writes `o`, with one store over the whole buffer, and nothing else
//!   reads or writes `o`'s buffer;
//! - inside `K`, every load of `p` uses exactly that store's access (so element `(r, c)` of
//!   `p` is read before it is overwritten, and rows stay independent for threads), and no
//!   kernel after `K` reads `p`;
//! - `p` is no output of its own and is replaced by one output only.
//!
//! Writing in place must not make a failed run lose the parameters it read. So the program
//! also gets guards: the regions read by in-place kernels that are computed before the first
//! of them (gradients, scalars), and every output computed by then (the loss). The runtime
//! checks that they are finite before running the first in-place kernel and stops the run
//! otherwise, leaving every parameter as it was. A kernel that reads something computed
//! after that point stays out of place, and so does one whose work is not all of one phase
//! (the builder says which are), so a value that turns non-finite inside an in-place kernel
//! turned so in the update itself.

use super::{Access, BufId, BufKind, KExpr, Kernel, KernelBody, Kind, Program, RowMap};
use crate::ir::DType;
use std::collections::{HashMap, HashSet};

/// Which outputs a program stores in place, and what must be finite before it does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InPlace {
    /// `(output index, parameter index)`: output `o` is stored in parameter `p`'s buffer.
    pub pairs: Vec<(usize, usize)>,
    /// The first kernel that writes a parameter (the kernel count when none does).
    pub first_kernel: usize,
    /// `(buffer, offset, len)`: regions that must be finite before `first_kernel` runs.
    pub guards: Vec<(BufId, usize, usize)>,
}

/// A candidate pair: the output, the parameter, their buffers and the writing kernel.
#[derive(Clone, Copy)]
struct Candidate {
    output: usize,
    param: usize,
    out_buf: BufId,
    param_buf: BufId,
    kernel: usize,
    store: usize,
}

/// Store what it safely can of `pairs` in place, recording the pairs and guards in
/// `p.in_place`; only kernels marked in `eligible` may store in place.
pub fn write_in_place(p: &mut Program, pairs: &[(usize, usize)], eligible: &[bool]) {
    let touches = buffer_uses(&p.kernels);
    let mut cands: Vec<Candidate> = pairs
        .iter()
        .filter_map(|&(o, q)| candidate(p, &touches, o, q))
        .filter(|c| eligible.get(c.kernel).copied().unwrap_or(false))
        .collect();
    // Parameters replaced twice, or by an output that another output shares, stay as they are.
    let mut seen: HashMap<BufId, usize> = HashMap::new();
    for c in &cands {
        *seen.entry(c.param_buf).or_default() += 1;
        *seen.entry(c.out_buf).or_default() += 1;
    }
    let mut outputs_in: HashMap<BufId, usize> = HashMap::new();
    for o in &p.outputs {
        *outputs_in.entry(o.buf).or_default() += 1;
    }
    cands.retain(|c| {
        seen[&c.param_buf] == 1
            && seen[&c.out_buf] == 1
            && outputs_in.get(&c.out_buf) == Some(&1)
            && !outputs_in.contains_key(&c.param_buf)
    });
    // Every kernel in place reads only what is computed before the first of them; dropping
    // a kernel can move that point later, so repeat until it holds.
    let writer = first_writer(&p.kernels);
    loop {
        let first = cands.iter().map(|c| c.kernel).min();
        let Some(first) = first else { break };
        let before = cands.len();
        cands.retain(|c| reads_ready(p, &p.kernels[c.kernel], &writer, first));
        if cands.len() == before {
            break;
        }
    }
    let first_kernel = cands.iter().map(|c| c.kernel).min();
    for c in &cands {
        if let KernelBody::Loop(l) = &mut p.kernels[c.kernel].body {
            l.stores[c.store].access.buf = c.param_buf;
        }
        p.outputs[c.output].buf = c.param_buf;
    }
    let first_kernel = first_kernel.unwrap_or(p.kernels.len());
    let guards = guards(p, &cands, &writer, first_kernel);
    let mut pairs: Vec<(usize, usize)> = cands.iter().map(|c| (c.output, c.param)).collect();
    pairs.sort_unstable();
    p.in_place = InPlace {
        pairs,
        first_kernel,
        guards,
    };
}

/// The kernels that read or write each buffer, in order.
fn buffer_uses(kernels: &[Kernel]) -> HashMap<BufId, Vec<usize>> {
    let mut uses: HashMap<BufId, Vec<usize>> = HashMap::new();
    for (k, kernel) in kernels.iter().enumerate() {
        for b in kernel.body.buffers() {
            let u = uses.entry(b).or_default();
            if u.last() != Some(&k) {
                u.push(k);
            }
        }
    }
    uses
}

/// The first kernel that stores into each buffer.
fn first_writer(kernels: &[Kernel]) -> HashMap<BufId, usize> {
    let mut w = HashMap::new();
    for (k, kernel) in kernels.iter().enumerate() {
        for b in kernel.body.written() {
            w.entry(b).or_insert(k);
        }
    }
    w
}

/// Pair `(o, q)` when its kernel and accesses allow storing in place.
fn candidate(
    p: &Program,
    touches: &HashMap<BufId, Vec<usize>>,
    o: usize,
    q: usize,
) -> Option<Candidate> {
    let out = p.outputs.get(o)?;
    let param_buf = *p.params.get(q)?;
    let ob = &p.buffers[out.buf.index()];
    let pb = &p.buffers[param_buf.index()];
    let len: usize = out.shape.iter().product();
    if ob.kind != BufKind::Temp
        || out.dtype != DType::F32
        || pb.dtype != DType::F32
        || out.offset != 0
        || ob.len != len
        || pb.len != len
    {
        return None;
    }
    // One kernel touches the output's buffer; no later kernel touches the parameter.
    let [kernel] = touches.get(&out.buf)?[..] else {
        return None;
    };
    if touches
        .get(&param_buf)
        .is_some_and(|u| u.iter().any(|&k| k > kernel))
    {
        return None;
    }
    let KernelBody::Loop(l) = &p.kernels[kernel].body else {
        return None;
    };
    let mut stores = l
        .stores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.access.buf == out.buf);
    let (store, s) = stores.next()?;
    if stores.next().is_some() || !s.col || l.rows * l.cols != len || !covers(&s.access, l.cols) {
        return None;
    }
    let same = Access {
        buf: param_buf,
        ..s.access.clone()
    };
    // With one row, the row stride is never used: `p[c]` and `p[r * cols + c]` agree.
    let one_row = |a: &Access| Access {
        rows: if l.rows == 1 {
            RowMap::Affine { stride: 0 }
        } else {
            a.rows.clone()
        },
        ..a.clone()
    };
    let loads_match = l.nodes.iter().all(|n| match &n.expr {
        KExpr::Load(a) if a.buf == out.buf => false,
        KExpr::Load(a) if a.buf == param_buf => n.kind == Kind::Col && one_row(a) == one_row(&same),
        KExpr::OneHot { ids, .. } => ids.buf != out.buf && ids.buf != param_buf,
        // Reads whole rows, which the guards do not cover: never in place.
        KExpr::TopKMask { .. } => false,
        _ => true,
    });
    loads_match.then_some(Candidate {
        output: o,
        param: q,
        out_buf: out.buf,
        param_buf,
        kernel,
        store,
    })
}

/// Whether a store writes a `rows x cols` domain row-major from element 0.
fn covers(a: &Access, cols: usize) -> bool {
    a.offset == 0
        && a.col_stride == 1
        && a.rows
            == RowMap::Affine {
                stride: cols as i64,
            }
}

/// Whether every buffer kernel `k` reads (parameters and inputs aside) is first written
/// before kernel `first`.
fn reads_ready(p: &Program, k: &Kernel, writer: &HashMap<BufId, usize>, first: usize) -> bool {
    k.body.buffers().iter().all(|b| {
        !matches!(p.buffers[b.index()].kind, BufKind::Temp)
            || k.body.written().contains(b)
            || writer.get(b).is_some_and(|&w| w < first)
    })
}

/// The region a load reads: from its first to its last element (the whole buffer when rows
/// go through a table or ids, or strides are negative).
fn span(a: &Access, rows: usize, cols: usize, len: usize) -> (BufId, usize, usize) {
    let whole = (a.buf, 0, len);
    let RowMap::Affine { stride } = a.rows else {
        return whole;
    };
    if stride < 0 || a.col_stride < 0 || a.offset < 0 {
        return whole;
    }
    let last = a.offset + (rows as i64 - 1) * stride + (cols as i64 - 1) * a.col_stride;
    (a.buf, a.offset as usize, (last - a.offset + 1) as usize)
}

/// The regions in-place kernels read from temporaries and inputs, and the outputs written
/// before `first`.
fn guards(
    p: &Program,
    cands: &[Candidate],
    writer: &HashMap<BufId, usize>,
    first: usize,
) -> Vec<(BufId, usize, usize)> {
    let mut out: Vec<(BufId, usize, usize)> = vec![];
    let mut seen: HashSet<(BufId, usize, usize)> = HashSet::new();
    let mut push = |r: (BufId, usize, usize)| {
        if seen.insert(r) {
            out.push(r);
        }
    };
    let kernels: std::collections::BTreeSet<usize> = cands.iter().map(|c| c.kernel).collect();
    for &k in &kernels {
        let KernelBody::Loop(l) = &p.kernels[k].body else {
            continue;
        };
        for n in &l.nodes {
            let KExpr::Load(a) = &n.expr else { continue };
            let b = &p.buffers[a.buf.index()];
            let guarded = matches!(b.kind, BufKind::Temp | BufKind::Input(_));
            if guarded && b.dtype == DType::F32 && writer.get(&a.buf).is_none_or(|&w| w < first) {
                let cols = if n.kind == Kind::Row { 1 } else { l.cols };
                push(span(a, l.rows, cols, b.len));
            }
        }
    }
    for o in &p.outputs {
        let written_before = writer.get(&o.buf).is_some_and(|&w| w < first);
        if o.dtype == DType::F32 && written_before {
            push((o.buf, o.offset, o.shape.iter().product()));
        }
    }
    out
}
