//! Quantized weights: GGML block formats, SIMD dot kernels and the quantized matrix product.

pub mod formats;
pub mod kernels;
pub mod matmul;
pub mod packed;
pub mod packed16;
pub mod pool;

pub use formats::QFormat;
pub use matmul::{matmul_many, QWeight};
