//! Which device a model runs on: `cpu` or `cuda`, chosen by the user or picked automatically.
//!
//! CUDA support is compiled in with the `cuda` feature (the CLI's `--features cuda` forwards to it).
//! Asking for CUDA in a build without it, or on a machine where no GPU can be opened, is an error that
//! says what to do; the automatic choice takes CUDA only when both hold, and the CPU otherwise.

use crate::error::{ModelError, Result};
use candle_core::Device;
use std::fmt;
use std::str::FromStr;

/// How to build with CUDA support (for error messages).
pub const CUDA_BUILD_HINT: &str = "rebuild with `--features cuda` (e.g. `cargo build --release -p \
openledger-cli --features cuda`; needs the CUDA toolkit's nvcc, which scripts/check-cuda-build sets up \
from PyPI)";

/// A device kind a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(ModelError::Device(format!(
                "unknown device {other:?}: use cpu or cuda"
            ))),
        }
    }
}

/// Whether this build has CUDA support (the `cuda` feature).
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// The kind of an opened device (`cpu`, `cuda`, or another backend's name).
pub fn kind_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// Opens the device asked for; `None` picks CUDA GPU 0 when this build has CUDA support and the GPU
/// opens, the CPU otherwise.
///
/// Asking for `Cuda` fails with a clear error when the build has no CUDA support (saying how to get
/// it) or when no GPU can be opened (with the driver's reason).
pub fn open(kind: Option<DeviceKind>) -> Result<Device> {
    match kind {
        Some(DeviceKind::Cpu) => Ok(Device::Cpu),
        Some(DeviceKind::Cuda) => open_cuda(),
        None if cuda_compiled() => Ok(open_cuda().unwrap_or(Device::Cpu)),
        None => Ok(Device::Cpu),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device> {
    // candle links the CUDA driver library, so reaching here means it loaded; opening GPU 0 fails
    // with the driver's error when there is no GPU or it cannot be used.
    Device::new_cuda(0).map_err(|e| {
        ModelError::Device(format!(
            "CUDA was requested but GPU 0 could not be opened: {e}; run with --device cpu"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device> {
    Err(ModelError::Device(format!(
        "CUDA was requested but this build has no CUDA support: {CUDA_BUILD_HINT}; or run with --device cpu"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for k in [DeviceKind::Cpu, DeviceKind::Cuda] {
            assert_eq!(k.as_str().parse::<DeviceKind>().unwrap(), k);
        }
        assert_eq!(" CUDA ".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda);
        let e = "tpu".parse::<DeviceKind>().unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("cpu or cuda"), "{e}");
    }

    #[test]
    fn cpu_always_opens() {
        assert!(open(Some(DeviceKind::Cpu)).unwrap().is_cpu());
    }

    /// Without the `cuda` feature the automatic choice is the CPU and asking for CUDA says how to
    /// build with it; with it, the automatic choice never fails (CPU when no GPU opens).
    #[test]
    fn cuda_is_refused_with_a_hint_without_the_feature() {
        let auto = open(None).unwrap();
        if cuda_compiled() {
            assert!(matches!(kind_name(&auto), "cpu" | "cuda"));
            return;
        }
        assert!(auto.is_cpu());
        let e = open(Some(DeviceKind::Cuda)).unwrap_err().to_string();
        assert!(e.contains("no CUDA support"), "{e}");
        assert!(e.contains("--features cuda"), "{e}");
        assert!(e.contains("--device cpu"), "{e}");
    }
}
