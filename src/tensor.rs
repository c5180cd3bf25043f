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
