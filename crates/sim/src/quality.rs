//! Model quality from data: the fitted curve validation loss = `a + b · rows^(-c)` over
//! accepted, quality-weighted rows, turned into a quality in 0..1 (the share of the possible
//! loss reduction over the base model that the adapter achieves).

use crate::scenario::Quality;

/// The quality an adapter trained on `rows` quality-weighted rows reaches (0 without data).
pub fn quality(q: &Quality, rows: f64) -> f64 {
    if rows < 1.0 {
        return 0.0;
    }
    let loss = q.a + q.b * rows.powf(-q.c);
    ((q.base_loss - loss) / (q.base_loss - q.a)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_rises_with_rows_and_stays_in_range() {
        let q = Quality::default();
        assert_eq!(quality(&q, 0.0), 0.0);
        let mut last = 0.0;
        for rows in [10.0, 100.0, 1e3, 1e4, 1e5, 1e7] {
            let v = quality(&q, rows);
            assert!(v >= last && (0.0..=1.0).contains(&v), "{rows}: {v}");
            last = v;
        }
        assert!(last > 0.9, "{last}");
    }
}
