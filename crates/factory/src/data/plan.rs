//! The order of training: a seeded train/validation split, a seeded shuffle per epoch, micro-batches
//! (a fixed number of examples, or with packing as many examples as fill `batch_size` rows of
//! `cutoff_len` tokens) and optimizer steps of `gradient_accumulation_steps` micro-batches. The last
//! step of an epoch may hold fewer micro-batches; every step's loss is the mean over its target tokens.

use crate::rng::permutation;

/// Indices into the examples: which are held out for validation, which train.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Holds out `val_size` (a fraction, rounded up, or a count) of `n` examples, chosen by `seed`.
pub fn split(n: usize, val_size: f64, seed: u64) -> Result<Split, String> {
    let n_val = if val_size >= 1.0 {
        val_size as usize
    } else {
        (val_size * n as f64).ceil() as usize
    };
    if n_val >= n {
        return Err(format!(
            "val_size {val_size} holds out {n_val} of the {n} usable examples, leaving none to train on; lower val_size or add data"
        ));
    }
    let perm = permutation(n, seed, "split", &[]);
    let mut train = perm[n_val..].to_vec();
    train.sort_unstable();
    Ok(Split {
        train,
        val: perm[..n_val].to_vec(),
    })
}

/// How the training examples are batched. Positions refer to the train list.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Token count of each training example.
    pub lens: Vec<usize>,
    pub batch_size: usize,
    pub accum: usize,
    pub cutoff: usize,
    pub packing: bool,
    pub seed: u64,
}

impl Plan {
    /// Epoch `epoch`'s order of the training examples.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        permutation(self.lens.len(), self.seed, "epoch", &[epoch])
    }

    /// The micro-batches of an order.
    pub fn micro_batches(&self, order: &[usize]) -> Vec<Vec<usize>> {
        if !self.packing {
            return order
                .chunks(self.batch_size)
                .map(<[usize]>::to_vec)
                .collect();
        }
        // Rows of up to `cutoff` tokens filled in order, then `batch_size` rows per micro-batch.
        let mut rows: Vec<Vec<usize>> = Vec::new();
        let mut used = usize::MAX;
        for &i in order {
            let len = self.lens[i];
            if used.saturating_add(len) > self.cutoff {
                rows.push(Vec::new());
                used = 0;
            }
            rows.last_mut().expect("a row was opened").push(i);
            used += len;
        }
        rows.chunks(self.batch_size).map(|r| r.concat()).collect()
    }

    /// The optimizer steps of an order, each a list of micro-batches.
    pub fn steps(&self, order: &[usize]) -> Vec<Vec<Vec<usize>>> {
        self.micro_batches(order)
            .chunks(self.accum)
            .map(<[Vec<usize>]>::to_vec)
            .collect()
    }

    pub fn steps_in_epoch(&self, epoch: u64) -> usize {
        if !self.packing {
            return self
                .lens
                .len()
                .div_ceil(self.batch_size)
                .div_ceil(self.accum);
        }
        self.steps(&self.epoch_order(epoch)).len()
    }

    /// Optimizer steps of the whole run: `max_steps`, or `epochs` passes (a fractional last epoch
    /// rounded up to whole steps).
    pub fn total_steps(&self, epochs: f64, max_steps: u64) -> u64 {
        if max_steps > 0 {
            return max_steps;
        }
        let whole = epochs.floor() as u64;
        let mut total: u64 = (0..whole).map(|e| self.steps_in_epoch(e) as u64).sum();
        let frac = epochs - whole as f64;
        if frac > 0.0 {
            total += (frac * self.steps_in_epoch(whole) as f64).ceil() as u64;
        }
        total.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lens: Vec<usize>, packing: bool) -> Plan {
        Plan {
            lens,
            batch_size: 2,
            accum: 2,
            cutoff: 10,
            packing,
            seed: 3,
        }
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let s = split(20, 0.1, 1).unwrap();
        assert_eq!((s.train.len(), s.val.len()), (18, 2));
        assert_eq!(s, split(20, 0.1, 1).unwrap());
        assert_ne!(s.val, split(20, 0.1, 2).unwrap().val);
        assert!(s.val.iter().all(|v| !s.train.contains(v)));
        assert_eq!(split(20, 3.0, 1).unwrap().val.len(), 3);
        assert!(split(3, 0.99, 1).unwrap_err().contains("lower val_size"));
    }

    #[test]
    fn steps_cover_each_example_once_per_epoch() {
        let p = plan(vec![3; 9], false);
        let steps = p.steps(&p.epoch_order(0));
        assert_eq!(steps.len(), p.steps_in_epoch(0));
        assert_eq!(steps.len(), 3); // 5 micro-batches of ≤2, in steps of 2
        let mut seen: Vec<usize> = steps.concat().concat();
        seen.sort();
        assert_eq!(seen, (0..9).collect::<Vec<_>>());
        assert_ne!(p.epoch_order(0), p.epoch_order(1));
        assert_eq!(p.total_steps(2.0, 0), 6);
        assert_eq!(p.total_steps(1.5, 0), 5);
        assert_eq!(p.total_steps(2.0, 4), 4);
    }

    #[test]
    fn packing_fills_rows_up_to_the_cutoff() {
        let p = plan(vec![4, 4, 4, 9, 2], true);
        let order = vec![0, 1, 2, 3, 4];
        // rows: [0,1] (8), [2] (4; 4+9>10), [3] (9; 9+2>10), [4]; two rows per micro-batch
        assert_eq!(p.micro_batches(&order), vec![vec![0, 1, 2], vec![3, 4]]);
    }
}
