//! Memory planning: every buffer gets an offset in one arena. Persistent buffers (parameters,
//! inputs, constants, index tables) come first; temporaries share the rest by liveness, each
//! placed at the lowest offset free over its live range (largest first).

use crate::kernels::{BufKind, Program};
use std::collections::BTreeMap;
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

pub fn plan(p: &Program) -> Plan {
    plan_with(p, place)
}

/// A temporary to place: `(buffer, elements rounded up, live range)`.
type Temp = (usize, usize, (usize, usize));

/// Decides the offsets of temporaries, as `place` does.
type Placer = fn(&[Temp], usize, usize) -> Vec<(usize, usize)>;

/// The plan, with `placer` deciding the temporaries' offsets.
fn plan_with(p: &Program, placer: Placer) -> Plan {
    let nb = p.buffers.len();
    let nk = p.kernels.len();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; nb];
    for (k, kernel) in p.kernels.iter().enumerate() {
        for b in kernel.body.buffers() {
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
    let temps: Vec<Temp> = temps
        .into_iter()
        .filter_map(|i| Some((i, round_up(p.buffers[i].len.max(1)), live[i]?)))
        .collect();
    let mut end = persistent;
    for (i, off) in placer(&temps, persistent, nk + 1) {
        offsets[i] = off;
        end = end.max(off + round_up(p.buffers[i].len.max(1)));
    }
    Plan {
        offsets,
        live,
        persistent_elems: persistent,
        total_elems: end,
    }
}

/// Offsets of `(buffer, len, live range)` in this order, each at the lowest offset
/// `>= from` free over its live range (`points`: one past the last kernel index).
fn place(temps: &[Temp], from: usize, points: usize) -> Vec<(usize, usize)> {
    let mut placed = Placed::new(points);
    temps
        .iter()
        .map(|&(i, len, (s, e))| {
            let off = placed.lowest_free(s, e, from, len);
            placed.insert(s, e, off, off + len);
            (i, off)
        })
        .collect()
}

/// A union of element ranges `[start, end)`: disjoint, non-touching, keyed by start.
#[derive(Default)]
struct Ranges(BTreeMap<usize, usize>);

impl Ranges {
    fn insert(&mut self, a: usize, b: usize) {
        // Extend a range that starts at or before `a` and reaches it, else start a new one.
        let start = match self.0.range_mut(..=a).next_back() {
            Some((&s, e)) if *e >= a => {
                if *e >= b {
                    return;
                }
                *e = b;
                s
            }
            _ => {
                self.0.insert(a, b);
                a
            }
        };
        // Absorb the ranges it now reaches.
        let mut end = b;
        while let Some((&s, &e)) = self.0.range(start + 1..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.0.remove(&s);
        }
        if end > b {
            self.0.insert(start, end);
        }
    }

    /// The lowest `y >= x` with `[y, y + len)` outside every range.
    fn first_fit(&self, x: usize, len: usize) -> usize {
        // The last range starting before `y + len` is the only one that can overlap
        // `[y, y + len)` (the ranges before it end before it starts); if it does, no
        // offset below its end fits. One lookup per step, and usually one step.
        let mut y = x;
        while let Some((_, &e)) = self.0.range(..y + len).next_back() {
            if e <= y {
                break;
            }
            y = e;
        }
        y
    }
}

/// Placed temporaries, indexed by live range for the question "which element ranges are
/// busy at some kernel of `s..=e`": a segment tree over kernel indices. A buffer live over
/// `s..=e` is recorded in `cover` of the canonical nodes of `s..=e` (nodes whose whole range
/// it spans) and in `touch` of every node on the paths from leaves `s` and `e` to the root
/// (nodes it overlaps, which include every ancestor of a canonical node). A buffer overlaps
/// a query range exactly when it is in `touch` of one of the query's canonical nodes or in
/// `cover` of a node on the query's two leaf paths.
struct Placed {
    leaves: usize,
    cover: Vec<Ranges>,
    touch: Vec<Ranges>,
}

impl Placed {
    fn new(points: usize) -> Placed {
        let leaves = points.next_power_of_two();
        Placed {
            leaves,
            cover: (0..2 * leaves).map(|_| Ranges::default()).collect(),
            touch: (0..2 * leaves).map(|_| Ranges::default()).collect(),
        }
    }

    /// Calls `f` on each canonical node of `s..=e`.
    fn canonical(leaves: usize, s: usize, e: usize, mut f: impl FnMut(usize)) {
        let (mut l, mut r) = (s + leaves, e + leaves + 1);
        while l < r {
            if l & 1 == 1 {
                f(l);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                f(r);
            }
            l >>= 1;
            r >>= 1;
        }
    }

    /// Calls `f` on each node on the paths from leaves `s` and `e` to the root.
    fn paths(leaves: usize, s: usize, e: usize, mut f: impl FnMut(usize)) {
        let (mut a, mut b) = (s + leaves, e + leaves);
        while a >= 1 {
            f(a);
            if b != a {
                f(b);
            }
            a >>= 1;
            b >>= 1;
        }
    }

    fn insert(&mut self, s: usize, e: usize, start: usize, end: usize) {
        Self::canonical(self.leaves, s, e, |n| self.cover[n].insert(start, end));
        Self::paths(self.leaves, s, e, |n| self.touch[n].insert(start, end));
    }

    /// The lowest offset `>= from` where `len` elements are free at every kernel of `s..=e`.
    fn lowest_free(&self, s: usize, e: usize, from: usize, len: usize) -> usize {
        let mut sets: Vec<&Ranges> = Vec::with_capacity(64);
        Self::canonical(self.leaves, s, e, |n| sets.push(&self.touch[n]));
        Self::paths(self.leaves, s, e, |n| sets.push(&self.cover[n]));
        sets.retain(|r| !r.0.is_empty());
        // Each set's first fit at or above `x` in turn, until every set accepts `x`: a move
        // skips only offsets where some placed buffer is in the way.
        let mut x = from;
        let (mut i, mut accepted) = (0, 0);
        while accepted < sets.len() {
            let y = sets[i].first_fit(x, len);
            if y != x {
                x = y;
                accepted = 1;
            } else {
                accepted += 1;
            }
            i = (i + 1) % sets.len();
        }
        x
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: scan every placed buffer whose live range meets this one.
    fn place_by_scan(temps: &[Temp], from: usize, _points: usize) -> Vec<(usize, usize)> {
        let mut placed: Vec<(usize, usize, (usize, usize))> = vec![];
        let mut out = vec![];
        for &(i, len, (s, e)) in temps {
            let mut busy: Vec<(usize, usize)> = placed
                .iter()
                .filter(|(_, _, (ps, pe))| *ps <= e && s <= *pe)
                .map(|&(o, l, _)| (o, o + l))
                .collect();
            busy.sort();
            let mut off = from;
            for (bs, be) in busy {
                if off + len <= bs {
                    break;
                }
                off = off.max(be);
            }
            placed.push((off, len, (s, e)));
            out.push((i, off));
        }
        out
    }

    #[test]
    fn indexed_placement_matches_the_scan() {
        // A small deterministic generator (xorshift).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for case in 0..300 {
            let points = 1 + next(if case % 3 == 0 { 8 } else { 200 });
            let count = next(120);
            let mut temps: Vec<Temp> = (0..count)
                .map(|i| {
                    let s = next(points);
                    let long = next(4) == 0;
                    let e = s + next(if long { points - s } else { 4.min(points - s) });
                    (i, ALIGN * (1 + next(6)), (s, e))
                })
                .collect();
            temps.sort_by_key(|&(i, len, _)| (std::cmp::Reverse(len), i));
            let from = ALIGN * next(3);
            assert_eq!(
                place(&temps, from, points),
                place_by_scan(&temps, from, points),
                "case {case}"
            );
        }
    }

    #[test]
    fn indexed_plan_matches_the_scan_on_the_examples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "lam"))
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for f in files {
            let src = std::fs::read_to_string(&f).unwrap();
            let module = crate::syntax::parse(&src).unwrap();
            let forward = crate::elab::elaborate(&module, "model", &[]).unwrap();
            let joint = crate::autodiff::differentiate(&forward).unwrap();
            let g = crate::passes::optimize(&joint);
            let prog = crate::kernels::build_program(&g, &Default::default()).unwrap();
            assert_eq!(
                plan_with(&prog, place),
                plan_with(&prog, place_by_scan),
                "{}",
                f.display()
            );
        }
    }
}
