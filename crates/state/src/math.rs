//! Fee arithmetic: `x · m / d` on 256-bit amounts with small factors, the shape of every fee
//! split (basis points, parts per million). Settling one inference takes about a dozen of these,
//! so amounts that fit 128 bits (every fee at sane prices) take a native 128-bit path; the
//! result is exactly the 256-bit one.

use alloy_primitives::U256;

/// `x · m / d`, rounded down; `None` when `x · m` overflows 256 bits or `d` is zero.
pub fn mul_div(x: U256, m: u64, d: u64) -> Option<U256> {
    if d == 0 {
        return None;
    }
    if let Some(p) = u128::try_from(x)
        .ok()
        .and_then(|x| x.checked_mul(u128::from(m)))
    {
        return Some(U256::from(p / u128::from(d)));
    }
    x.checked_mul(U256::from(m)).map(|p| p / U256::from(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(x: U256, m: u64, d: u64) -> Option<U256> {
        (d != 0)
            .then(|| x.checked_mul(U256::from(m)).map(|p| p / U256::from(d)))
            .flatten()
    }

    proptest! {
        /// Small, 128-bit-edge and full-width amounts give the 256-bit result.
        #[test]
        fn mul_div_is_the_256_bit_result(
            limbs in any::<[u64; 4]>(),
            width in 0usize..5,
            m in prop_oneof![Just(0u64), Just(1), 1u64..=1_000_000, any::<u64>()],
            d in prop_oneof![Just(0u64), Just(1), Just(10_000), Just(1_000_000), any::<u64>()],
        ) {
            let mut l = limbs;
            l[width.min(4)..].iter_mut().for_each(|x| *x = 0);
            let x = U256::from_limbs(l);
            prop_assert_eq!(mul_div(x, m, d), reference(x, m, d));
        }
    }

    #[test]
    fn edges() {
        let max128 = U256::from(u128::MAX);
        assert_eq!(mul_div(max128, 2, 1), Some(max128 * U256::from(2u8)));
        assert_eq!(mul_div(U256::MAX, 2, 1), None, "overflow is refused");
        assert_eq!(mul_div(U256::MAX, 1, 1), Some(U256::MAX));
        assert_eq!(mul_div(U256::from(7u8), 3, 0), None);
        assert_eq!(mul_div(U256::from(999u16), 3, 1_000), Some(U256::from(2u8)));
    }
}
