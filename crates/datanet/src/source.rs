//! Contributed files as bytes plus a display name. Reading from disk is bounded: a file over
//! [`Limits::max_file_bytes`] is refused from its metadata, before any of it is read, and the
//! read itself stops one byte past the limit in case the file grew meanwhile.

use crate::{error::IngestError, limits::Limits, Result};
use std::io::Read;
use std::path::Path;

/// A contributed file: its name (the extension picks the parser) and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// File name as shown in messages, e.g. `data.jsonl`.
    pub name: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl SourceFile {
    /// A file already in memory (an upload, a blob).
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    /// Reads a file from disk, refusing it before reading when it is over the size limit.
    pub fn read(path: &Path, limits: &Limits) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let io = |source| IngestError::Io {
            file: name.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let too_large = |size| IngestError::TooLarge {
            file: name.clone(),
            size,
            max: limits.max_file_bytes,
        };
        if size > limits.max_file_bytes {
            return Err(too_large(size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(limits.max_file_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(Self { name, bytes })
    }

    /// The lower-cased extension, without the dot (empty when none).
    pub fn extension(&self) -> String {
        Path::new(&self.name)
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    }
}
