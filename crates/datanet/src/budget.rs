//! Expansion budgets: how many bytes compressed files (PDF streams, DOCX parts) may inflate to.
//! A file draws on its own budget ([`Limits::max_expanded_bytes`]) and on the budget of the
//! upload it came in ([`Limits::max_request_expanded_bytes`]), which the files of one upload,
//! parsed in parallel, share. Every decompression is charged each time it happens (a stream that
//! ten pages draw costs ten times), so neither a stream reused by many pages nor many small
//! files can add up to more than the budgets, and a budget crossed stops the parse with
//! [`IngestError::Expands`].

use crate::{error::IngestError, limits::Limits};
use std::sync::atomic::{AtomicU64, Ordering};

/// The expansion budget one upload's files share. Thread-safe: files are parsed in parallel.
#[derive(Debug)]
pub struct RequestBudget {
    max: u64,
    used: AtomicU64,
}

impl RequestBudget {
    /// A fresh budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            used: AtomicU64::new(0),
        }
    }

    /// The budget of one upload under `limits`.
    pub fn for_limits(limits: &Limits) -> Self {
        Self::new(limits.max_request_expanded_bytes)
    }

    /// Bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used())
    }

    /// Charges `n` bytes; false (and nothing charged) when that would pass the budget.
    fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= self.max)
            })
            .is_ok()
    }
}

/// One file's budget, drawing on its upload's [`RequestBudget`] as well.
#[derive(Debug)]
pub struct FileBudget<'a> {
    file: &'a str,
    max: u64,
    used: u64,
    request: &'a RequestBudget,
}

impl<'a> FileBudget<'a> {
    /// The budget of file `file` under `limits`, within `request`.
    pub fn new(file: &'a str, limits: &Limits, request: &'a RequestBudget) -> Self {
        Self {
            file,
            max: limits.max_expanded_bytes,
            used: 0,
            request,
        }
    }

    /// The file's name.
    pub fn file(&self) -> &str {
        self.file
    }

    /// The most one more decompression may produce: what is left of both budgets.
    pub fn remaining(&self) -> u64 {
        self.max
            .saturating_sub(self.used)
            .min(self.request.remaining())
    }

    /// [`Self::remaining`] as a `usize`, for decoders that take one.
    pub fn remaining_usize(&self) -> usize {
        usize::try_from(self.remaining()).unwrap_or(usize::MAX)
    }

    /// The error for an expansion that would pass a budget (the file's when it is the tighter).
    pub fn exceeded(&self) -> IngestError {
        let file_left = self.max.saturating_sub(self.used);
        let (limit, scope) = if file_left <= self.request.remaining() {
            (self.max, "file")
        } else {
            (self.request.max, "upload")
        };
        IngestError::Expands {
            file: self.file.to_string(),
            limit,
            scope,
        }
    }

    /// Charges `n` decompressed bytes to the file and its upload, or refuses them.
    pub fn charge(&mut self, n: u64) -> Result<(), IngestError> {
        let total = self.used.checked_add(n).filter(|&t| t <= self.max);
        match total {
            Some(total) if self.request.try_charge(n) => {
                self.used = total;
                Ok(())
            }
            _ => Err(self.exceeded()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_held_to_its_own_budget_and_to_its_uploads() {
        let limits = Limits {
            max_expanded_bytes: 100,
            max_request_expanded_bytes: 150,
            ..Limits::default()
        };
        let request = RequestBudget::for_limits(&limits);
        let mut a = FileBudget::new("a.pdf", &limits, &request);
        a.charge(60).unwrap();
        assert_eq!(a.remaining(), 40);
        let err = a.charge(41).unwrap_err().to_string();
        assert!(err.contains("a.pdf") && err.contains("per file"), "{err}");
        assert_eq!(request.used(), 60, "a refused charge costs nothing");
        let mut b = FileBudget::new("b.pdf", &limits, &request);
        assert_eq!(b.remaining(), 90, "the upload has 90 left");
        b.charge(90).unwrap();
        let err = b.charge(1).unwrap_err().to_string();
        assert!(err.contains("b.pdf") && err.contains("per upload"), "{err}");
        assert!(b.charge(u64::MAX).is_err(), "no overflow");
    }
}
