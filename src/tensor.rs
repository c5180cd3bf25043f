//! Host tensors exchanged between the interpreter, files and the runtime.
//!
//! The reference interpreter computes in f64, so a `Tensor` holds f64 elements whatever
//! its IR dtype; i32 tensors hold exact integers. Conversion to f32 happens at the edges
//! (safetensors files, the JIT runtime).

use crate::ir::{DType, Type};

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { dtype, shape, data }
    }
    pub fn f32(shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        Tensor::new(DType::F32, shape, data)
    }
    pub fn i32(shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        Tensor::new(DType::I32, shape, data)
    }
    pub fn zeros(ty: &Type) -> Tensor {
        Tensor::new(ty.dtype, ty.shape.clone(), vec![0.0; ty.numel()])
    }
    pub fn scalar(v: f64) -> Tensor {
        Tensor::f32(vec![], vec![v])
    }
    pub fn ty(&self) -> Type {
        Type {
            dtype: self.dtype,
            shape: self.shape.clone(),
        }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// A host buffer the allocator refused: what it was for and its size. Buffers whose size
/// depends on the model or on input files go through the `try_*` functions below, so that a
/// model too large for the machine is an error and never an abort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocError {
    /// What the buffer was for (`parameter embed.weight`, `node %12 (matmul)`).
    pub what: String,
    pub bytes: u128,
}

impl std::fmt::Display for AllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot allocate {} for {}: the allocator refused (not enough memory, or a \
             lower limit such as `ulimit -v`); reduce the model with --set (batch, length, d, \
             vocab, layers)",
            human_bytes(self.bytes),
            self.what
        )
    }
}

impl std::error::Error for AllocError {}

/// Bytes in the largest binary unit that keeps the figure at least 1 (`110.3 GiB`).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift {
            return format!("{:.1} {unit}", bytes as f64 / (1u128 << shift) as f64);
        }
    }
    format!("{bytes} bytes")
}

/// An empty vector with room for `len` elements, or an error naming `what`.
pub fn try_buffer<T>(len: usize, what: impl FnOnce() -> String) -> Result<Vec<T>, AllocError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| AllocError {
        what: what(),
        bytes: len as u128 * std::mem::size_of::<T>() as u128,
    })?;
    Ok(v)
}

/// `len` copies of `value` (`vec![value; len]`), allocated fallibly.
pub fn try_filled<T: Clone>(
    len: usize,
    value: T,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>, AllocError> {
    let mut v = try_buffer(len, what)?;
    v.resize(len, value);
    Ok(v)
}

/// The items of `items` (at most `len` of them) in a buffer allocated fallibly first, so
/// collecting never grows it.
pub fn try_collect<T>(
    len: usize,
    items: impl IntoIterator<Item = T>,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>, AllocError> {
    let mut v = try_buffer(len, what)?;
    v.extend(items.into_iter().take(len));
    Ok(v)
}

/// A copy of `data`, allocated fallibly.
pub fn try_copy<T: Clone>(data: &[T], what: impl FnOnce() -> String) -> Result<Vec<T>, AllocError> {
    let mut v = try_buffer(data.len(), what)?;
    v.extend_from_slice(data);
    Ok(v)
}

impl Tensor {
    /// `Tensor::zeros`, allocated fallibly.
    pub fn try_zeros(ty: &Type, what: impl FnOnce() -> String) -> Result<Tensor, AllocError> {
        Ok(Tensor::new(
            ty.dtype,
            ty.shape.clone(),
            try_filled(ty.numel(), 0.0, what)?,
        ))
    }

    /// A copy of the tensor, allocated fallibly.
    pub fn try_clone(&self, what: impl FnOnce() -> String) -> Result<Tensor, AllocError> {
        Ok(Tensor::new(
            self.dtype,
            self.shape.clone(),
            try_copy(&self.data, what)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_buffers_are_errors() {
        let e = try_filled(usize::MAX / 16, 0f64, || "a test buffer".into()).unwrap_err();
        assert_eq!(e.bytes, (usize::MAX / 16) as u128 * 8);
        assert!(
            e.to_string()
                .starts_with("cannot allocate 8388608.0 TiB for a test buffer"),
            "{e}"
        );
        assert_eq!(try_collect(3, 0..10, || "x".into()).unwrap(), vec![0, 1, 2]);
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 bytes");
    }
}
