//! Partitioning a graph into kernels.
//!
//! One walk in topological order. Views (reshape, transpose, broadcast, slice) cost nothing:
//! they become strided index maps over a buffer. Elementwise ops, last-axis reductions,
//! softmax and causal masks join the loop kernel ("group") of their operands when the
//! operands line up with its `rows x cols` domain, either per element (`Col`) or per row
//! (`Row`, a reduced value broadcast along the row); otherwise they start a new group. A
//! value is stored to a buffer only when something outside its group (a matmul, a view that
//! cannot be fused, an output) needs it.
//!
//! Ordering invariant: kernels run in creation order, and a node may join group `g` only if
//! everything it reads from outside `g` is written by a kernel created before `g`.

use super::*;
use crate::ir::ops::MaskFill;
use crate::ir::{BinaryOp, UnaryOp, ViewOp};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::{try_buffer, AllocError};
use std::collections::HashMap;

/// What to compile.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Compute only these outputs (all graph outputs when `None`).
    pub outputs: Option<Vec<String>>,
    /// `(output index, parameter index)`: after a run, output `o` (of the program's outputs,
    /// the graph's when `outputs` is `None`) replaces parameter `p` (a training step's update). Such outputs are stored into the parameter's own buffer
    /// where that is safe (`in_place`).
    pub replaces: Vec<(usize, usize)>,
}

#[derive(Clone, Debug)]
struct View {
    buf: BufId,
    offset: i64,
    shape: Vec<usize>,
    strides: Vec<i64>,
}

impl View {
    fn contiguous(buf: BufId, offset: i64, shape: Vec<usize>) -> View {
        let strides = row_major(&shape);
        View {
            buf,
            offset,
            shape,
            strides,
        }
    }
    fn is_contiguous(&self) -> bool {
        self.shape
            .iter()
            .zip(&self.strides)
            .zip(row_major(&self.shape))
            .all(|((&d, &s), r)| d == 1 || s == r)
    }
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

#[derive(Clone, Debug)]
enum Val {
    View(View),
    Const {
        value: f64,
        shape: Vec<usize>,
    },
    /// Node `node` of group `group`, used as `kind` (a `Col` use of a `Row` node is a splat).
    Fused {
        group: usize,
        node: usize,
        kind: Kind,
        shape: Vec<usize>,
    },
}

struct Group {
    slot: usize,
    rows: usize,
    cols: usize,
    nodes: Vec<KNode>,
    stores: Vec<Store>,
    stored: HashMap<(usize, bool), BufId>,
    loads: HashMap<Access, usize>,
    ir_nodes: Vec<u32>,
    scope: String,
}

enum Slot {
    Group(usize),
    Fixed(Box<Kernel>),
}

struct Builder<'g> {
    g: &'g Graph,
    buffers: Vec<BufInfo>,
    slots: Vec<Slot>,
    groups: Vec<Group>,
    vals: Vec<Option<Val>>,
    /// Slot that writes each temp buffer.
    producer: HashMap<BufId, usize>,
    tables: HashMap<Vec<i32>, BufId>,
    index_inputs: Vec<(usize, usize)>,
    cur: u32,
    /// Live users of each node (a graph output counts as a user `usize::MAX`).
    users: Vec<Vec<usize>>,
    /// `scale` nodes read only by matmuls: (argument, factor), folded into the GEMM's alpha.
    scaled: HashMap<usize, (ValueId, f64)>,
    /// Contiguous copies already made of a view (buffers are written once, so they stay valid).
    copies: HashMap<(BufId, i64, Vec<usize>, Vec<i64>), View>,
}

type R<T> = Result<T, KernelError>;

/// Lower `g` to kernels.
pub fn build_program(g: &Graph, opts: &BuildOptions) -> R<Program> {
    g.verify()
        .map_err(|e| KernelError::IllFormedGraph(e.to_string()))?;
    let wanted = wanted_outputs(g, opts)?;
    let live = live_nodes(g, &wanted);
    let mut b = Builder::new(g, &live, &wanted);
    let inputs: Vec<BufId> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            b.new_buf(
                inp.ty.numel(),
                inp.ty.dtype,
                BufKind::Input(i),
                format!("input {}", inp.name),
            )
        })
        .collect();
    let params: Vec<BufId> = g
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            b.new_buf(
                p.ty().numel(),
                DType::F32,
                BufKind::Param(i),
                format!("param {}", p.name),
            )
        })
        .collect();
    b.lower_live(&live, &inputs, &params)?;
    let outputs = b.program_outputs(&wanted)?;
    let Builder {
        buffers,
        slots,
        groups,
        index_inputs,
        ..
    } = b;
    let mut prog = Program {
        name: g.name.clone(),
        buffers,
        kernels: kernels_in_order(slots, groups),
        inputs,
        params,
        outputs,
        index_inputs,
        in_place: Default::default(),
    };
    if !opts.replaces.is_empty() {
        // A kernel that mixes phases (backward work with an update) computes more than the
        // guards can vouch for, so it never stores in place.
        let one_phase: Vec<bool> = prog
            .kernels
            .iter()
            .map(|k| {
                let phase = |n: &u32| g.nodes[*n as usize].phase;
                k.nodes
                    .first()
                    .is_none_or(|f| k.nodes.iter().all(|n| phase(n) == phase(f)))
            })
            .collect();
        super::in_place::write_in_place(&mut prog, &opts.replaces, &one_phase);
    }
    check_program(&prog)?;
    Ok(prog)
}

/// The outputs to compute, with their values: all the graph's, or those `opts` names.
fn wanted_outputs(g: &Graph, opts: &BuildOptions) -> R<Vec<(String, ValueId)>> {
    Ok(match &opts.outputs {
        None => g
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.value))
            .collect(),
        Some(names) => {
            // The first output of each name, as `Graph::output` finds it.
            let mut by_name: HashMap<&str, ValueId> = HashMap::new();
            for o in &g.outputs {
                by_name.entry(o.name.as_str()).or_insert(o.value);
            }
            names
                .iter()
                .map(|n| {
                    by_name
                        .get(n.as_str())
                        .map(|&v| (n.clone(), v))
                        .ok_or_else(|| KernelError::NoOutput(n.clone()))
                })
                .collect::<R<_>>()?
        }
    })
}

/// Which nodes the wanted outputs depend on.
fn live_nodes(g: &Graph, wanted: &[(String, ValueId)]) -> Vec<bool> {
    let mut live = vec![false; g.nodes.len()];
    for (_, v) in wanted {
        live[v.index()] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if live[i] {
            for a in &g.nodes[i].args {
                live[a.index()] = true;
            }
        }
    }
    live
}

/// The kernels in slot order: fixed kernels as they are, groups as loop kernels.
fn kernels_in_order(slots: Vec<Slot>, groups: Vec<Group>) -> Vec<Kernel> {
    let mut groups: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    slots
        .into_iter()
        .map(|s| match s {
            Slot::Fixed(k) => *k,
            Slot::Group(gi) => {
                let grp = groups[gi].take().expect("each group has one slot");
                Kernel {
                    nodes: grp.ir_nodes,
                    scope: grp.scope,
                    body: KernelBody::Loop(LoopKernel {
                        rows: grp.rows,
                        cols: grp.cols,
                        nodes: grp.nodes,
                        stores: grp.stores,
                    }),
                }
            }
        })
        .collect()
}

/// Non-size-1 dims of a shape with their strides.
fn squeeze(shape: &[usize], strides: &[i64]) -> (Vec<usize>, Vec<i64>) {
    shape
        .iter()
        .zip(strides)
        .filter(|(&d, _)| d != 1)
        .map(|(&d, &s)| (d, s))
        .unzip()
}

/// One stride for a run of dims, when they merge.
fn merged_stride(shape: &[usize], strides: &[i64]) -> Option<i64> {
    for i in 0..shape.len().saturating_sub(1) {
        if strides[i] != strides[i + 1] * shape[i + 1] as i64 {
            return None;
        }
    }
    Some(strides.last().copied().unwrap_or(0))
}

impl<'g> Builder<'g> {
    /// A builder for the `live` nodes of `g`, with the users of each (a wanted output
    /// counts as a user `usize::MAX`).
    fn new(g: &'g Graph, live: &[bool], wanted: &[(String, ValueId)]) -> Builder<'g> {
        let mut b = Builder {
            g,
            buffers: vec![],
            slots: vec![],
            groups: vec![],
            vals: vec![None; g.nodes.len()],
            producer: HashMap::new(),
            tables: HashMap::new(),
            index_inputs: vec![],
            cur: 0,
            users: vec![vec![]; g.nodes.len()],
            scaled: HashMap::new(),
            copies: HashMap::new(),
        };
        for (i, node) in g.nodes.iter().enumerate() {
            if live[i] {
                for a in &node.args {
                    b.users[a.index()].push(i);
                }
            }
        }
        for (_, v) in wanted {
            b.users[v.index()].push(usize::MAX);
        }
        b
    }

    /// Lower every live node in order; leaves read the `inputs` and `params` buffers.
    fn lower_live(&mut self, live: &[bool], inputs: &[BufId], params: &[BufId]) -> R<()> {
        let g = self.g;
        for (i, &is_live) in live.iter().enumerate() {
            if !is_live {
                continue;
            }
            self.cur = i as u32;
            let node = &g.nodes[i];
            let val = match &node.op {
                Op::Input { index } => {
                    Val::View(View::contiguous(inputs[*index], 0, node.ty.shape.clone()))
                }
                Op::Param { index } => {
                    Val::View(View::contiguous(params[*index], 0, node.ty.shape.clone()))
                }
                Op::Unary(UnaryOp::Scale { factor }) if self.only_matmuls_read(i) => {
                    // No kernel: each reading GEMM scales its product instead.
                    self.scaled.insert(i, (node.args[0], factor.get()));
                    continue;
                }
                _ => self.lower(i)?,
            };
            self.vals[i] = Some(val);
        }
        Ok(())
    }

    /// Every wanted output, materialized contiguously with its dtype.
    fn program_outputs(&mut self, wanted: &[(String, ValueId)]) -> R<Vec<ProgramOutput>> {
        let mut outputs = vec![];
        for (name, v) in wanted {
            let view = self.materialize_contiguous(*v)?;
            let dtype = self.g.ty(*v).dtype;
            self.buffers[view.buf.index()].dtype = dtype;
            outputs.push(ProgramOutput {
                name: name.clone(),
                buf: view.buf,
                offset: view.offset as usize,
                shape: view.shape,
                dtype,
            });
        }
        Ok(outputs)
    }

    /// An internal error while lowering the current node.
    fn ierr<T>(&self, message: impl Into<String>) -> R<T> {
        Err(KernelError::Internal {
            node: self.cur,
            message: message.into(),
        })
    }

    fn new_buf(&mut self, len: usize, dtype: DType, kind: BufKind, label: String) -> BufId {
        let id = BufId(self.buffers.len() as u32);
        self.buffers.push(BufInfo {
            len,
            dtype,
            kind,
            label,
        });
        id
    }

    fn temp(&mut self, len: usize, dtype: DType, label: String) -> BufId {
        self.new_buf(len, dtype, BufKind::Temp, label)
    }

    fn val(&self, v: ValueId) -> R<Val> {
        match self.vals.get(v.index()).cloned().flatten() {
            Some(x) => Ok(x),
            None => self.ierr(format!("{v} used before it is lowered")),
        }
    }

    fn push_fixed(&mut self, body: KernelBody, writes: &[BufId]) -> usize {
        let slot = self.slots.len();
        let scope = self
            .g
            .nodes
            .get(self.cur as usize)
            .map(|n| n.scope.clone())
            .unwrap_or_default();
        self.slots.push(Slot::Fixed(Box::new(Kernel {
            nodes: vec![self.cur],
            scope,
            body,
        })));
        for w in writes {
            self.producer.insert(*w, slot);
        }
        slot
    }

    fn new_group(&mut self, rows: usize, cols: usize) -> usize {
        let gi = self.groups.len();
        let slot = self.slots.len();
        self.slots.push(Slot::Group(gi));
        let scope = self
            .g
            .nodes
            .get(self.cur as usize)
            .map(|n| n.scope.clone())
            .unwrap_or_default();
        self.groups.push(Group {
            slot,
            rows,
            cols,
            nodes: vec![],
            stores: vec![],
            stored: HashMap::new(),
            loads: HashMap::new(),
            ir_nodes: vec![],
            scope,
        });
        gi
    }

    fn add_node(&mut self, gi: usize, expr: KExpr, kind: Kind) -> usize {
        let grp = &mut self.groups[gi];
        if let KExpr::Load(a) = &expr {
            if let Some(&n) = grp.loads.get(a) {
                return n;
            }
            grp.loads.insert(a.clone(), grp.nodes.len());
        }
        grp.nodes.push(KNode { expr, kind });
        grp.nodes.len() - 1
    }

    fn note_ir(&mut self, gi: usize) {
        let cur = self.cur;
        let grp = &mut self.groups[gi];
        if grp.ir_nodes.last() != Some(&cur) {
            grp.ir_nodes.push(cur);
        }
    }

    // ---- views and materialization ----

    /// Element offsets of every row of a view's dims (row-major), as a table buffer.
    fn table(&mut self, offset: i64, shape: &[usize], strides: &[i64]) -> R<BufId> {
        let n: usize = shape.iter().product();
        let mut t = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            let off: i64 = offset
                + idx
                    .iter()
                    .zip(strides)
                    .map(|(&i, &s)| i as i64 * s)
                    .sum::<i64>();
            t.push(i32::try_from(off).or_else(|_| self.ierr("offset beyond i32"))?);
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        if let Some(&b) = self.tables.get(&t) {
            return Ok(b);
        }
        let b = self.new_buf(
            t.len().max(1),
            DType::I32,
            BufKind::Table(t.clone()),
            "row table".into(),
        );
        self.tables.insert(t, b);
        Ok(b)
    }

    /// An access reading a view as a `rows x cols` domain (flat index `r * cols + c`), when its
    /// layout allows one.
    fn access_for(&mut self, v: &View, rows: usize, cols: usize) -> R<Option<Access>> {
        let (shape, strides) = squeeze(&v.shape, &v.strides);
        let mut k = shape.len();
        let mut p = 1usize;
        while p < cols && k > 0 {
            k -= 1;
            p *= shape[k];
        }
        if p != cols {
            return Ok(None);
        }
        let col_stride = if k == shape.len() {
            0
        } else {
            match merged_stride(&shape[k..], &strides[k..]) {
                Some(s) => s,
                None => return Ok(None),
            }
        };
        if shape[..k].iter().product::<usize>() != rows {
            return Ok(None);
        }
        let rowmap = match merged_stride(&shape[..k], &strides[..k]) {
            Some(s) => RowMap::Affine { stride: s },
            None => RowMap::Table {
                table: self.table(0, &shape[..k], &strides[..k])?,
            },
        };
        Ok(Some(Access {
            buf: v.buf,
            offset: v.offset,
            rows: rowmap,
            col_stride,
        }))
    }

    /// Like `access_for`, copying the view to a contiguous buffer first when needed.
    fn load_access(&mut self, v: &View, rows: usize, cols: usize) -> R<Access> {
        if let Some(a) = self.access_for(v, rows, cols)? {
            return Ok(a);
        }
        let c = self.copy_view(v)?;
        match self.access_for(&c, rows, cols)? {
            Some(a) => Ok(a),
            None => self.ierr(format!("cannot read {:?} as {rows}x{cols}", v.shape)),
        }
    }

    /// `(rows, cols)` of a shape seen as a domain over its last axis.
    fn domain(shape: &[usize]) -> (usize, usize) {
        match shape.last() {
            None => (1, 1),
            Some(&c) => (shape[..shape.len() - 1].iter().product(), c),
        }
    }

    /// Copy a view into a new contiguous buffer (once per distinct view).
    fn copy_view(&mut self, v: &View) -> R<View> {
        let key = (v.buf, v.offset, v.shape.clone(), v.strides.clone());
        if let Some(c) = self.copies.get(&key) {
            return Ok(c.clone());
        }
        let c = self.copy_view_new(v)?;
        self.copies.insert(key, c.clone());
        Ok(c)
    }

    fn copy_view_new(&mut self, v: &View) -> R<View> {
        let (rows, cols) = Self::domain(&v.shape);
        let numel = rows * cols;
        let dtype = self.buffers[v.buf.index()].dtype;
        let out = self.temp(numel, dtype, format!("copy of {}", v.buf));
        let src = match self.access_for(v, rows, cols)? {
            Some(a) => a,
            None => return self.ierr(format!("view {:?} has no last-axis access", v.shape)),
        };
        let dst = Access {
            buf: out,
            offset: 0,
            rows: RowMap::Affine {
                stride: cols as i64,
            },
            col_stride: 1,
        };
        let l = LoopKernel {
            rows,
            cols,
            nodes: vec![KNode {
                expr: KExpr::Load(src),
                kind: Kind::Col,
            }],
            stores: vec![Store {
                value: 0,
                col: true,
                access: dst,
            }],
        };
        self.push_fixed(KernelBody::Loop(l), &[out]);
        Ok(View::contiguous(out, 0, v.shape.clone()))
    }

    /// The value of `v` in a buffer (any strides).
    fn materialize(&mut self, v: ValueId) -> R<View> {
        match self.val(v)? {
            Val::View(view) => Ok(view),
            Val::Const { value, shape } => {
                let (rows, cols) = Self::domain(&shape);
                let out = self.temp(rows * cols, DType::F32, format!("full {value}"));
                let l = LoopKernel {
                    rows,
                    cols,
                    nodes: vec![KNode {
                        expr: KExpr::Const(value as f32),
                        kind: Kind::Row,
                    }],
                    stores: vec![Store {
                        value: 0,
                        col: true,
                        access: Access {
                            buf: out,
                            offset: 0,
                            rows: RowMap::Affine {
                                stride: cols as i64,
                            },
                            col_stride: 1,
                        },
                    }],
                };
                self.push_fixed(KernelBody::Loop(l), &[out]);
                let view = View::contiguous(out, 0, shape);
                self.vals[v.index()] = Some(Val::View(view.clone()));
                Ok(view)
            }
            Val::Fused {
                group,
                node,
                kind,
                shape,
            } => {
                let col = kind == Kind::Col;
                let grp = &self.groups[group];
                let (rows, cols) = (grp.rows, grp.cols);
                let buf = match grp.stored.get(&(node, col)) {
                    Some(&b) => b,
                    None => {
                        let len = if col { rows * cols } else { rows };
                        let b = self.temp(len, DType::F32, format!("%{}", v.0));
                        let stride = if col { cols as i64 } else { 1 };
                        let grp = &mut self.groups[group];
                        grp.stores.push(Store {
                            value: node,
                            col,
                            access: Access {
                                buf: b,
                                offset: 0,
                                rows: RowMap::Affine { stride },
                                col_stride: i64::from(col),
                            },
                        });
                        grp.stored.insert((node, col), b);
                        let slot = grp.slot;
                        self.producer.insert(b, slot);
                        b
                    }
                };
                Ok(View::contiguous(buf, 0, shape))
            }
        }
    }

    fn materialize_contiguous(&mut self, v: ValueId) -> R<View> {
        let view = self.materialize(v)?;
        if view.is_contiguous() {
            Ok(View::contiguous(view.buf, view.offset, view.shape))
        } else {
            self.copy_view(&view)
        }
    }

    // ---- lowering ----

    fn lower(&mut self, i: usize) -> R<Val> {
        let g = self.g;
        let node = &g.nodes[i];
        let shape = node.ty.shape.clone();
        let args = &node.args;
        match &node.op {
            Op::Input { .. } | Op::Param { .. } => self.ierr("leaf lowered twice"),
            Op::Full { value, .. } => Ok(Val::Const {
                value: value.get(),
                shape,
            }),
            Op::Sinusoidal { len, dim, base } => {
                let data = sinusoidal(*len, *dim, base.get()).map_err(KernelError::Alloc)?;
                let b = self.new_buf(
                    data.len().max(1),
                    DType::F32,
                    BufKind::Const(data),
                    "sinusoidal".into(),
                );
                Ok(Val::View(View::contiguous(b, 0, shape)))
            }
            Op::View(_) => self.lower_view(i),
            Op::Binary(BinaryOp::Add) => match self.fold_bias(i)? {
                Some(v) => Ok(v),
                None => self.lower_fusable(i),
            },
            Op::Unary(_)
            | Op::Binary(_)
            | Op::ReduceSum { .. }
            | Op::Softmax
            | Op::LogSoftmax
            | Op::CausalMask { .. } => self.lower_fusable(i),
            Op::MatMul { ta, tb } => self.lower_matmul(args[0], args[1], *ta, *tb, &shape),
            Op::Gather => self.lower_gather(i),
            Op::OneHot { classes } => self.lower_one_hot(i, *classes),
            Op::TopKMask { k } => self.lower_topk_mask(i, *k),
            Op::ScatterAdd { rows } => self.lower_scatter_add(i, *rows),
            Op::Concat { axis } => self.lower_concat(i, *axis),
        }
    }

    /// `gather(table, ids)`: a loop kernel loading table rows through the ids.
    fn lower_gather(&mut self, i: usize) -> R<Val> {
        let g = self.g;
        let node = &g.nodes[i];
        let shape = node.ty.shape.clone();
        let args = &node.args;
        let table = self.materialize(args[0])?;
        let ids = self.materialize_contiguous(args[1])?;
        let (v, d) = (table.shape[0], table.shape[1]);
        self.note_index(args[1], v);
        let rows = shape[..shape.len() - 1].iter().product();
        let gi = self.new_group(rows, d);
        let a = Access {
            buf: table.buf,
            offset: table.offset,
            rows: RowMap::Indirect {
                ids: ids.buf,
                ids_offset: ids.offset,
                limit: v as i64,
                stride: table.strides[0],
            },
            col_stride: table.strides[1],
        };
        Ok(self.column_node(gi, KExpr::Load(a), shape))
    }

    /// `one_hot(ids)`: a loop kernel comparing each column with the row's id.
    fn lower_one_hot(&mut self, i: usize, classes: usize) -> R<Val> {
        let g = self.g;
        let node = &g.nodes[i];
        let shape = node.ty.shape.clone();
        let args = &node.args;
        let ids = self.materialize_contiguous(args[0])?;
        self.note_index(args[0], classes);
        let rows = ids.shape.iter().product();
        let gi = self.new_group(rows, classes);
        let a = Access {
            buf: ids.buf,
            offset: ids.offset,
            rows: RowMap::Affine { stride: 1 },
            col_stride: 0,
        };
        let expr = KExpr::OneHot {
            ids: a,
            classes: classes as i64,
        };
        Ok(self.column_node(gi, expr, shape))
    }

    /// `topk_mask(x)`: a loop kernel over the rows of `x`, which it reads from a buffer (each
    /// column compares its entry with the whole row); elementwise users fuse after it.
    fn lower_topk_mask(&mut self, i: usize, k: usize) -> R<Val> {
        let g = self.g;
        let node = &g.nodes[i];
        let shape = node.ty.shape.clone();
        let x = self.materialize(node.args[0])?;
        let (rows, cols) = Self::domain(&shape);
        let a = self.load_access(&x, rows, cols)?;
        let gi = self.new_group(rows, cols);
        let expr = KExpr::TopKMask { x: a, k: k as i64 };
        Ok(self.column_node(gi, expr, shape))
    }

    /// A per-element node that starts group `gi` on behalf of the current IR node.
    fn column_node(&mut self, gi: usize, expr: KExpr, shape: Vec<usize>) -> Val {
        let n = self.add_node(gi, expr, Kind::Col);
        self.note_ir(gi);
        Val::Fused {
            group: gi,
            node: n,
            kind: Kind::Col,
            shape,
        }
    }

    /// `scatter_add(ids, src)`: a kernel of its own (rows may collide).
    fn lower_scatter_add(&mut self, i: usize, rows: usize) -> R<Val> {
        let g = self.g;
        let node = &g.nodes[i];
        let shape = node.ty.shape.clone();
        let args = &node.args;
        let ids = self.materialize_contiguous(args[0])?;
        let src = self.materialize_contiguous(args[1])?;
        self.note_index(args[0], rows);
        let d = *shape.last().unwrap_or(&1);
        let n = ids.shape.iter().product();
        // The scatter kernel indexes from each buffer's start.
        let ids_b = self.rebase(&ids)?;
        let src_b = self.rebase(&src)?;
        let out = self.temp(rows * d, DType::F32, format!("%{i}"));
        self.push_fixed(
            KernelBody::ScatterAdd {
                ids: ids_b,
                src: src_b,
                out,
                n,
                d,
                out_rows: rows,
            },
            &[out],
        );
        Ok(Val::View(View::contiguous(out, 0, shape)))
    }

    /// `concat(...)` along `axis`: one copy kernel per argument into slices of one buffer.
    fn lower_concat(&mut self, i: usize, axis: usize) -> R<Val> {
        let g = self.g;
        let node = &g.nodes[i];
        let shape = node.ty.shape.clone();
        let args = &node.args;
        let dtype = node.ty.dtype;
        let numel = node.ty.numel();
        let out = self.temp(numel, dtype, format!("%{i}"));
        let full = View::contiguous(out, 0, shape.clone());
        let mut start = 0usize;
        for a in args {
            let src = self.materialize(*a)?;
            let len = src.shape[axis];
            let mut dst = full.clone();
            dst.offset += start as i64 * dst.strides[axis];
            dst.shape[axis] = len;
            start += len;
            let (rows, cols) = Self::domain(&src.shape);
            let la = self.load_access(&src, rows, cols)?;
            let Some(sa) = self.access_for(&dst, rows, cols)? else {
                return self.ierr("concat destination has no last-axis access");
            };
            let l = LoopKernel {
                rows,
                cols,
                nodes: vec![KNode {
                    expr: KExpr::Load(la),
                    kind: Kind::Col,
                }],
                stores: vec![Store {
                    value: 0,
                    col: true,
                    access: sa,
                }],
            };
            self.push_fixed(KernelBody::Loop(l), &[out]);
        }
        Ok(Val::View(full))
    }

    /// A contiguous view as a buffer of its own (copying when it starts at an offset).
    fn rebase(&mut self, v: &View) -> R<BufId> {
        if v.offset == 0 && v.is_contiguous() {
            return Ok(v.buf);
        }
        let c = self.copy_view(v)?;
        Ok(c.buf)
    }

    /// Record the bound an index input must respect (when the ids come straight from one).
    fn note_index(&mut self, ids: ValueId, bound: usize) {
        let mut v = ids;
        loop {
            let n = self.g.node(v);
            match &n.op {
                Op::Input { index } => {
                    self.index_inputs.push((*index, bound));
                    return;
                }
                Op::View(_) if !n.args.is_empty() => v = n.args[0],
                Op::Concat { .. } => {
                    for a in n.args.clone() {
                        self.note_index(a, bound);
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    fn lower_view(&mut self, i: usize) -> R<Val> {
        let node = &self.g.nodes[i];
        let arg = node.args[0];
        let in_shape = self.g.ty(arg).shape.clone();
        let out_shape = node.ty.shape.clone();
        let val = self.val(arg)?;
        if let Val::Const { value, .. } = val {
            return Ok(Val::Const {
                value,
                shape: out_shape,
            });
        }
        if let Val::Fused {
            group,
            node: kn,
            kind,
            ..
        } = val
        {
            let grp = &self.groups[group];
            let fused = match &node.op {
                Op::View(ViewOp::Reshape { .. }) => Some(kind),
                Op::View(ViewOp::Broadcast { .. }) if in_shape == out_shape => Some(kind),
                Op::View(ViewOp::Broadcast { .. }) => {
                    let r = out_shape.len();
                    let splat = kind == Kind::Row
                        && r >= 1
                        && in_shape.len() == r
                        && in_shape[r - 1] == 1
                        && in_shape[..r - 1] == out_shape[..r - 1]
                        && out_shape[r - 1] == grp.cols;
                    splat.then_some(Kind::Col)
                }
                _ => None,
            };
            if let Some(kind) = fused {
                return Ok(Val::Fused {
                    group,
                    node: kn,
                    kind,
                    shape: out_shape,
                });
            }
        }
        let v = self.materialize(arg)?;
        let view = match &node.op {
            Op::View(ViewOp::Reshape { shape }) => reshape_view(&v, shape).map_or_else(
                || {
                    let c = self.copy_view(&v)?;
                    Ok::<View, KernelError>(View::contiguous(c.buf, c.offset, shape.clone()))
                },
                Ok,
            )?,
            Op::View(ViewOp::Transpose { perm }) => View {
                buf: v.buf,
                offset: v.offset,
                shape: perm.iter().map(|&p| v.shape[p]).collect(),
                strides: perm.iter().map(|&p| v.strides[p]).collect(),
            },
            Op::View(ViewOp::Broadcast { shape }) => {
                let off = shape.len() - v.shape.len();
                let strides = (0..shape.len())
                    .map(|d| {
                        if d < off || v.shape[d - off] != shape[d] {
                            0
                        } else {
                            v.strides[d - off]
                        }
                    })
                    .collect();
                View {
                    buf: v.buf,
                    offset: v.offset,
                    shape: shape.clone(),
                    strides,
                }
            }
            Op::View(ViewOp::Slice { axis, start, end }) => {
                let mut s = v.clone();
                s.offset += *start as i64 * s.strides[*axis];
                s.shape[*axis] = end - start;
                s
            }
            _ => return self.ierr("not a view op"),
        };
        Ok(Val::View(view))
    }

    fn lower_matmul(
        &mut self,
        a: ValueId,
        b: ValueId,
        ta: bool,
        tb: bool,
        out: &[usize],
    ) -> R<Val> {
        let mut alpha = 1.0f64;
        let mut unscale = |v: ValueId| match self.scaled.get(&v.index()) {
            Some(&(x, f)) => {
                alpha *= f;
                x
            }
            None => v,
        };
        let (a, b) = (unscale(a), unscale(b));
        let va = self.materialize(a)?;
        let vb = self.materialize(b)?;
        let r = out.len();
        let (m, n) = (out[r - 2], out[r - 1]);
        let ra = va.shape.len();
        let k = if ta {
            va.shape[ra - 2]
        } else {
            va.shape[ra - 1]
        };
        let batch_shape = &out[..r - 2];
        let operand = |v: &View, t: bool| -> MatOperand {
            let q = v.shape.len();
            let (rs, cs) = if t {
                (v.strides[q - 1], v.strides[q - 2])
            } else {
                (v.strides[q - 2], v.strides[q - 1])
            };
            let offsets = batch_offsets(v.offset, batch_shape, &v.strides[..q - 2]);
            MatOperand {
                buf: v.buf,
                offsets,
                rs,
                cs,
            }
        };
        let oa = operand(&va, ta);
        let mut ob = operand(&vb, tb);
        if vb.shape.len() == 2 {
            ob.offsets = vec![vb.offset; oa.offsets.len()];
        }
        let numel: usize = out.iter().product();
        let c = self.temp(numel, DType::F32, format!("%{}", self.cur));
        let cv = match self.transposed_layout(self.cur as usize) {
            // Written in the layout its transpose reads, so the transpose is contiguous.
            Some(perm) => {
                let tshape: Vec<usize> = perm.iter().map(|&p| out[p]).collect();
                let tstrides = row_major(&tshape);
                let mut strides = vec![0i64; r];
                for (i, &p) in perm.iter().enumerate() {
                    strides[p] = tstrides[i];
                }
                View {
                    buf: c,
                    offset: 0,
                    shape: out.to_vec(),
                    strides,
                }
            }
            None => View::contiguous(c, 0, out.to_vec()),
        };
        let oc = MatOperand {
            buf: c,
            offsets: batch_offsets(0, batch_shape, &cv.strides[..r - 2]),
            rs: cv.strides[r - 2],
            cs: cv.strides[r - 1],
        };
        let mut mm = MatMulKernel {
            m,
            n,
            k,
            a: oa,
            b: ob,
            c: oc,
            alpha: alpha as f32,
            bias: None,
            path: MatPath::Gemm,
        };
        flatten_batch(&mut mm);
        mm.path = matmul_path(&mm);
        self.push_fixed(KernelBody::MatMul(mm), &[c]);
        Ok(Val::View(cv))
    }

    /// `add(matmul, broadcast(bias row))` whose sum only feeds matmuls (through views): the
    /// bias goes into the GEMM (no kernel of its own). `None` when the pattern does not hold.
    fn fold_bias(&mut self, i: usize) -> R<Option<Val>> {
        let node = &self.g.nodes[i];
        if !self.feeds_only_matmuls(i) {
            return Ok(None);
        }
        for (m, bb) in [(node.args[0], node.args[1]), (node.args[1], node.args[0])] {
            let (mn, bn) = (self.g.node(m), self.g.node(bb));
            if !matches!(mn.op, Op::MatMul { .. })
                || self.users[m.index()] != [i]
                || !matches!(bn.op, Op::View(ViewOp::Broadcast { .. }))
            {
                continue;
            }
            let row = &self.g.ty(bn.args[0]).shape;
            let n = *node.ty.shape.last().unwrap_or(&0);
            if row.last() != Some(&n) || row.iter().product::<usize>() != n {
                continue;
            }
            let (Some(Val::View(mv)), Some(Val::View(bv))) = (
                self.vals[m.index()].clone(),
                self.vals[bn.args[0].index()].clone(),
            ) else {
                continue;
            };
            let Some(&slot) = self.producer.get(&mv.buf) else {
                continue;
            };
            if self.producer.get(&bv.buf).is_some_and(|&s| s >= slot) {
                continue;
            }
            let bias = Access {
                buf: bv.buf,
                offset: bv.offset,
                rows: RowMap::Affine { stride: 0 },
                col_stride: *bv.strides.last().unwrap_or(&1),
            };
            if let Some(Slot::Fixed(k)) = self.slots.get_mut(slot) {
                if let KernelBody::MatMul(mm) = &mut k.body {
                    if mm.c.buf == mv.buf && mm.bias.is_none() {
                        mm.bias = Some(bias);
                        mm.path = MatPath::Gemm;
                        k.nodes.push(i as u32);
                        return Ok(Some(Val::View(mv)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Whether node `i` is read only by matmuls, directly or through reshapes and transposes.
    fn feeds_only_matmuls(&self, i: usize) -> bool {
        let u = &self.users[i];
        !u.is_empty()
            && u.iter().all(|&j| {
                j != usize::MAX
                    && match self.g.nodes[j].op {
                        Op::MatMul { .. } => true,
                        Op::View(ViewOp::Reshape { .. }) | Op::View(ViewOp::Transpose { .. }) => {
                            self.feeds_only_matmuls(j)
                        }
                        Op::Unary(UnaryOp::Scale { .. }) => self.only_matmuls_read(j),
                        _ => false,
                    }
            })
    }

    /// Whether every reader of node `i` is a matmul (and it is not an output).
    fn only_matmuls_read(&self, i: usize) -> bool {
        let u = &self.users[i];
        !u.is_empty()
            && u.iter()
                .all(|&j| j != usize::MAX && matches!(self.g.nodes[j].op, Op::MatMul { .. }))
    }

    /// The permutation every reader of matmul `i` transposes it by, when they all agree and
    /// it keeps the last axis last (so GEMM rows stay contiguous).
    fn transposed_layout(&self, i: usize) -> Option<Vec<usize>> {
        let mut perm: Option<&Vec<usize>> = None;
        for &j in &self.users[i] {
            match self.g.nodes.get(j).map(|n| &n.op) {
                Some(Op::View(ViewOp::Transpose { perm: p })) if perm.is_none_or(|q| q == p) => {
                    perm = Some(p)
                }
                _ => return None,
            }
        }
        let p = perm?;
        let r = p.len();
        let identity = p.iter().enumerate().all(|(i, &x)| i == x);
        (r >= 3 && !identity && p[r - 1] == r - 1).then(|| p.clone())
    }

    // ---- fusion ----

    /// Where an argument of a fusable node comes from, relative to group `gi`.
    fn arg_ready_for(&self, v: ValueId, gi: usize) -> R<bool> {
        let slot = self.groups[gi].slot;
        Ok(match self.val(v)? {
            Val::Const { .. } => true,
            Val::Fused { group, .. } => self.groups[group].slot <= slot,
            Val::View(view) => self.producer.get(&view.buf).is_none_or(|&s| s < slot),
        })
    }

    /// The kernel node reading argument `v` in group `gi` as `kind` (loads, constants, or
    /// the fused node itself). `None` when it cannot be read without a new kernel.
    fn arg_node(
        &mut self,
        v: ValueId,
        gi: usize,
        kind: Kind,
        allow_copy: bool,
    ) -> R<Option<usize>> {
        let (rows, cols) = (self.groups[gi].rows, self.groups[gi].cols);
        let dcols = if kind == Kind::Row { 1 } else { cols };
        match self.val(v)? {
            Val::Const { value, .. } => Ok(Some(self.add_node(
                gi,
                KExpr::Const(value as f32),
                Kind::Row,
            ))),
            Val::Fused { group, node, .. } if group == gi => Ok(Some(node)),
            _ => {
                let view = self.materialize(v)?;
                let a = if allow_copy {
                    self.load_access(&view, rows, dcols)?
                } else {
                    match self.access_for(&view, rows, dcols)? {
                        Some(a) => a,
                        None => return Ok(None),
                    }
                };
                let k = if a.col_stride == 0 || kind == Kind::Row {
                    Kind::Row
                } else {
                    Kind::Col
                };
                let a = if k == Kind::Row {
                    Access { col_stride: 0, ..a }
                } else {
                    a
                };
                Ok(Some(self.add_node(gi, KExpr::Load(a), k)))
            }
        }
    }

    fn fused_kind(&self, v: ValueId, gi: usize) -> R<Option<Kind>> {
        Ok(match self.val(v)? {
            Val::Fused { group, kind, .. } if group == gi => Some(kind),
            _ => None,
        })
    }

    /// How node `i` would sit in group `gi`: its kind, or `None` if it cannot join.
    fn join_kind(&mut self, i: usize, gi: usize) -> R<Option<Kind>> {
        let node = &self.g.nodes[i];
        let (rows, cols) = (self.groups[gi].rows, self.groups[gi].cols);
        let numel = node.ty.numel();
        for a in &node.args {
            if !self.arg_ready_for(*a, gi)? {
                return Ok(None);
            }
        }
        let kinds: Vec<Option<Kind>> = node
            .args
            .iter()
            .map(|a| self.fused_kind(*a, gi))
            .collect::<R<_>>()?;
        let any_col = kinds.contains(&Some(Kind::Col));
        let a0 = node
            .args
            .first()
            .map(|a| self.g.ty(*a).shape.clone())
            .unwrap_or_default();
        let kind = match &node.op {
            Op::Unary(_) | Op::Binary(_) => {
                if any_col && numel == rows * cols {
                    Some(Kind::Col)
                } else if !any_col && numel == rows {
                    Some(Kind::Row)
                } else {
                    None
                }
            }
            Op::ReduceSum { axes, .. } => match kinds[0] {
                Some(Kind::Col) => {
                    let (kept, red) = split_axes(&a0, axes);
                    (suffix_reduction(&a0, axes) && kept == rows && red == cols)
                        .then_some(Kind::Row)
                }
                Some(Kind::Row) => axes.iter().all(|&d| a0[d] == 1).then_some(Kind::Row),
                None => None,
            },
            Op::Softmax | Op::LogSoftmax => {
                (kinds[0] == Some(Kind::Col) && a0.last() == Some(&cols)).then_some(Kind::Col)
            }
            Op::CausalMask { .. } => {
                let r = a0.len();
                (kinds[0] == Some(Kind::Col) && a0[r - 1] == cols && a0[r - 2] == cols)
                    .then_some(Kind::Col)
            }
            _ => None,
        };
        let Some(kind) = kind else { return Ok(None) };
        // Other arguments must be readable in this domain without a new kernel.
        for (a, k) in node.args.iter().zip(&kinds) {
            if k.is_none() {
                if let Val::View(view) = self.val(*a)? {
                    let dcols = if kind == Kind::Row { 1 } else { cols };
                    if self.access_for(&view, rows, dcols)?.is_none() {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(kind))
    }

    /// The newest group, when elementwise node `i` reads nothing fused but can start a
    /// column value there: same domain and phase, every operand ready and readable in
    /// place. Chains that begin from stored buffers (an optimizer's `beta m` beside
    /// `(1 - beta) g`) then share one pass over memory instead of storing each start for the
    /// next kernel. Phases stay apart so that a kernel updating parameters does no
    /// backward work (see `in_place`).
    fn sibling_group(&mut self, i: usize) -> R<Option<usize>> {
        let node = &self.g.nodes[i];
        if !matches!(node.op, Op::Unary(_) | Op::Binary(_)) {
            return Ok(None);
        }
        let Some(gi) = self.groups.len().checked_sub(1) else {
            return Ok(None);
        };
        let (rows, cols) = (self.groups[gi].rows, self.groups[gi].cols);
        if Self::domain(&node.ty.shape) != (rows, cols) || node.ty.numel() != rows * cols {
            return Ok(None);
        }
        let same_phase = self.groups[gi]
            .ir_nodes
            .first()
            .is_some_and(|&n| self.g.nodes[n as usize].phase == node.phase);
        if !same_phase {
            return Ok(None);
        }
        for a in node.args.clone() {
            if !self.arg_ready_for(a, gi)? {
                return Ok(None);
            }
            if let Val::View(view) = self.val(a)? {
                if self.access_for(&view, rows, cols)?.is_none() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(gi))
    }

    fn lower_fusable(&mut self, i: usize) -> R<Val> {
        let node = &self.g.nodes[i];
        let mut cand: Option<usize> = None;
        for a in &node.args {
            if let Val::Fused { group, .. } = self.val(*a)? {
                if cand.is_none_or(|c| self.groups[group].slot > self.groups[c].slot) {
                    cand = Some(group);
                }
            }
        }
        if let Some(gi) = cand {
            if let Some(kind) = self.join_kind(i, gi)? {
                return self.emit(i, gi, kind, false);
            }
        } else if let Some(gi) = self.sibling_group(i)? {
            return self.emit(i, gi, Kind::Col, false);
        }
        // A new group: its domain comes from the node.
        let shape = node.ty.shape.clone();
        match &node.op {
            Op::ReduceSum { axes, .. } => {
                let a0 = self.g.ty(node.args[0]).shape.clone();
                let (kept, red) = split_axes(&a0, axes);
                if !suffix_reduction(&a0, axes) {
                    return self.lower_general_reduce(i, &a0, axes);
                }
                let gi = self.new_group(kept, red);
                self.emit(i, gi, Kind::Row, true)
            }
            _ => {
                let (rows, cols) = Self::domain(&shape);
                // Materialize producers (stores, copies) before the new kernel exists.
                for a in &node.args {
                    if !matches!(self.val(*a)?, Val::Const { .. }) {
                        let v = self.materialize(*a)?;
                        if self.access_for(&v, rows, cols)?.is_none() {
                            let c = self.copy_view(&v)?;
                            self.vals[a.index()] = Some(Val::View(c));
                        }
                    }
                }
                let gi = self.new_group(rows, cols);
                self.emit(i, gi, Kind::Col, true)
            }
        }
    }

    /// Add node `i` to group `gi` as `kind`.
    fn emit(&mut self, i: usize, gi: usize, kind: Kind, allow_copy: bool) -> R<Val> {
        let node = &self.g.nodes[i];
        let shape = node.ty.shape.clone();
        let arg_kind = match node.op {
            Op::ReduceSum { .. } => {
                if self.fused_kind(node.args[0], gi)? == Some(Kind::Row) {
                    Kind::Row
                } else {
                    Kind::Col
                }
            }
            _ => kind,
        };
        let mut an = vec![];
        for a in &node.args {
            match self.arg_node(*a, gi, arg_kind, allow_copy)? {
                Some(n) => an.push(n),
                None => {
                    return self.ierr(format!("%{i}: argument {a} cannot be read in its kernel"))
                }
            }
        }
        self.note_ir(gi);
        let n = match &node.op {
            Op::Unary(op) => self.add_node(gi, KExpr::Unary(*op, an[0]), kind),
            Op::Binary(op) => self.add_node(gi, KExpr::Binary(*op, an[0], an[1]), kind),
            Op::ReduceSum { .. } => {
                if arg_kind == Kind::Row {
                    an[0]
                } else {
                    self.add_node(gi, KExpr::RowSum(an[0]), Kind::Row)
                }
            }
            Op::Softmax => {
                let m = self.add_node(gi, KExpr::RowMax(an[0]), Kind::Row);
                let d = self.add_node(gi, KExpr::Binary(BinaryOp::Sub, an[0], m), Kind::Col);
                let e = self.add_node(gi, KExpr::Unary(UnaryOp::Exp, d), Kind::Col);
                let s = self.add_node(gi, KExpr::RowSum(e), Kind::Row);
                let r = self.add_node(gi, KExpr::Unary(UnaryOp::Recip, s), Kind::Row);
                self.add_node(gi, KExpr::Binary(BinaryOp::Mul, e, r), Kind::Col)
            }
            Op::LogSoftmax => {
                let m = self.add_node(gi, KExpr::RowMax(an[0]), Kind::Row);
                let d = self.add_node(gi, KExpr::Binary(BinaryOp::Sub, an[0], m), Kind::Col);
                let e = self.add_node(gi, KExpr::Unary(UnaryOp::Exp, d), Kind::Col);
                let s = self.add_node(gi, KExpr::RowSum(e), Kind::Row);
                let l = self.add_node(gi, KExpr::Unary(UnaryOp::Log, s), Kind::Row);
                self.add_node(gi, KExpr::Binary(BinaryOp::Sub, d, l), Kind::Col)
            }
            Op::CausalMask { fill } => {
                let f = match fill {
                    MaskFill::NegInf => f32::NEG_INFINITY,
                    MaskFill::Zero => 0.0,
                };
                self.add_node(gi, KExpr::CausalMask { x: an[0], fill: f }, Kind::Col)
            }
            op => return self.ierr(format!("{} is not fusable", op.name())),
        };
        Ok(Val::Fused {
            group: gi,
            node: n,
            kind,
            shape,
        })
    }

    /// A reduction over axes that are not a suffix: a column reduction when they are a
    /// prefix, otherwise a row reduction over a permuted view.
    fn lower_general_reduce(&mut self, i: usize, a0: &[usize], axes: &[usize]) -> R<Val> {
        let node = &self.g.nodes[i];
        let shape = node.ty.shape.clone();
        let arg = node.args[0];
        let (kept, red) = split_axes(a0, axes);
        let v = self.materialize(arg)?;
        let prefix = {
            let last_red = (0..a0.len())
                .filter(|d| axes.contains(d) && a0[*d] != 1)
                .max();
            let first_kept = (0..a0.len())
                .filter(|d| !axes.contains(d) && a0[*d] != 1)
                .min();
            matches!((last_red, first_kept), (Some(r), Some(k)) if r < k)
        };
        if prefix {
            if let Some(input) = self.access_for(&v, red, kept)? {
                let out = self.temp(kept, DType::F32, format!("%{i}"));
                let oa = Access {
                    buf: out,
                    offset: 0,
                    rows: RowMap::Affine { stride: 0 },
                    col_stride: 1,
                };
                self.push_fixed(
                    KernelBody::ColReduce {
                        rows: red,
                        cols: kept,
                        input,
                        out: oa,
                    },
                    &[out],
                );
                return Ok(Val::View(View::contiguous(out, 0, shape)));
            }
        }
        let perm: Vec<usize> = (0..a0.len())
            .filter(|d| !axes.contains(d))
            .chain(axes.iter().copied())
            .collect();
        let pv = View {
            buf: v.buf,
            offset: v.offset,
            shape: perm.iter().map(|&p| v.shape[p]).collect(),
            strides: perm.iter().map(|&p| v.strides[p]).collect(),
        };
        let pv = if self.access_for(&pv, kept, red)?.is_some() {
            pv
        } else {
            self.copy_view(&pv)?
        };
        let input = self.load_access(&pv, kept, red)?;
        let gi = self.new_group(kept, red);
        let l = self.add_node(gi, KExpr::Load(input), Kind::Col);
        let n = self.add_node(gi, KExpr::RowSum(l), Kind::Row);
        self.note_ir(gi);
        Ok(Val::Fused {
            group: gi,
            node: n,
            kind: Kind::Row,
            shape,
        })
    }
}

/// (kept elements, reduced elements) of a reduction.
fn split_axes(shape: &[usize], axes: &[usize]) -> (usize, usize) {
    let red: usize = axes.iter().map(|&a| shape[a]).product();
    (shape.iter().product::<usize>() / red.max(1), red)
}

/// Whether every non-size-1 reduced axis comes after every non-size-1 kept axis.
fn suffix_reduction(shape: &[usize], axes: &[usize]) -> bool {
    let first_red = (0..shape.len())
        .filter(|d| axes.contains(d) && shape[*d] != 1)
        .min();
    let last_kept = (0..shape.len())
        .filter(|d| !axes.contains(d) && shape[*d] != 1)
        .max();
    match (first_red, last_kept) {
        (Some(r), Some(k)) => k < r,
        _ => true,
    }
}

/// Offsets of every matrix of a batched operand.
fn batch_offsets(base: i64, batch: &[usize], strides: &[i64]) -> Vec<i64> {
    let n: usize = batch.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; batch.len()];
    for _ in 0..n {
        out.push(
            base + idx
                .iter()
                .zip(strides)
                .map(|(&i, &s)| i as i64 * s)
                .sum::<i64>(),
        );
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Reshape a strided view without copying, when its non-size-1 dims stay the same or it is
/// contiguous.
fn reshape_view(v: &View, shape: &[usize]) -> Option<View> {
    if v.is_contiguous() {
        return Some(View::contiguous(v.buf, v.offset, shape.to_vec()));
    }
    let (s0, st0) = squeeze(&v.shape, &v.strides);
    let s1: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    if s0 != s1 {
        return None;
    }
    let mut it = st0.into_iter();
    let strides = shape
        .iter()
        .map(|&d| if d == 1 { 0 } else { it.next().unwrap_or(0) })
        .collect();
    Some(View {
        buf: v.buf,
        offset: v.offset,
        shape: shape.to_vec(),
        strides,
    })
}

/// The `[len, dim]` table, built when the program is (it is constant data of the program).
fn sinusoidal(len: usize, dim: usize, base: f64) -> Result<Vec<f32>, AllocError> {
    let what = || format!("the sinusoidal table [{len}, {dim}]");
    let mut data = try_buffer(len * dim, what)?;
    for pos in 0..len {
        for j in 0..dim {
            data.push(crate::ir::sinusoidal_entry(pos, j, dim, base) as f32);
        }
    }
    Ok(data)
}

/// A batch of GEMMs sharing `b` whose `a` and `c` matrices are stacked row after row is one
/// GEMM with `batch * m` rows (`[B, T, D] @ [D, F]`): one big call instead of many small.
fn flatten_batch(mm: &mut MatMulKernel) {
    let batch = mm.c.offsets.len();
    if batch < 2 || mm.b.offsets.iter().any(|&o| o != mm.b.offsets[0]) {
        return;
    }
    let stacked = |o: &MatOperand| {
        let step = o.rs * mm.m as i64;
        o.rs != 0 && o.offsets.windows(2).all(|w| w[1] - w[0] == step)
    };
    if stacked(&mm.a) && stacked(&mm.c) {
        mm.m *= batch;
        for o in [&mut mm.a, &mut mm.b, &mut mm.c] {
            o.offsets.truncate(1);
        }
    }
}
