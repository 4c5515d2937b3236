//! OPEN amounts: 18 decimals, parsed from and printed as decimal strings ("1.5" OPEN).

use alloy_primitives::U256;

/// Decimals of OPEN (like ether).
pub const DECIMALS: u32 = 18;

/// One OPEN in its smallest unit.
pub fn one_open() -> U256 {
    U256::from(10u64).pow(U256::from(DECIMALS))
}

/// Parses a decimal amount of OPEN ("12", "0.5", "3 OPEN") or a raw amount with the `wei`
/// suffix ("1000wei"). Errors name the offending input.
pub fn parse_open(text: &str) -> Result<U256, String> {
    let t = text.trim();
    if let Some(raw) = t.strip_suffix("wei") {
        return raw
            .trim()
            .parse::<U256>()
            .map_err(|e| format!("invalid amount {text:?}: {e}"));
    }
    let t = t.strip_suffix("OPEN").unwrap_or(t).trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits_ok = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_ok(int) || !digits_ok(frac) {
        return Err(format!(
            "invalid amount {text:?}: expected a decimal number of OPEN such as 1.5, or a raw amount such as 1000wei"
        ));
    }
    if frac.len() > DECIMALS as usize {
        return Err(format!(
            "invalid amount {text:?}: OPEN has at most 18 decimals"
        ));
    }
    let int_v = if int.is_empty() {
        U256::ZERO
    } else {
        int.parse::<U256>()
            .map_err(|e| format!("invalid amount {text:?}: {e}"))?
    };
    let frac_padded = format!("{frac:0<18}");
    let frac_v = frac_padded
        .parse::<U256>()
        .map_err(|e| format!("invalid amount {text:?}: {e}"))?;
    int_v
        .checked_mul(one_open())
        .and_then(|v| v.checked_add(frac_v))
        .ok_or_else(|| format!("invalid amount {text:?}: too large"))
}

/// Formats a raw amount as OPEN with trailing zeros trimmed ("1.5", "0", "1000").
pub fn format_open(amount: U256) -> String {
    let one = one_open();
    let int = amount / one;
    let frac = amount % one;
    if frac.is_zero() {
        return int.to_string();
    }
    let frac = format!("{:0>18}", frac.to_string());
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Serde helpers: amounts written as decimal OPEN strings in genesis and params files.
pub mod serde_open {
    use super::{format_open, parse_open};
    use alloy_primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `v` as a decimal OPEN string.
    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_open(*v))
    }

    /// Reads a decimal OPEN string (or `…wei`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        let text = String::deserialize(d)?;
        parse_open(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_decimal_amounts() {
        for s in ["0", "1", "1.5", "0.000000000000000001", "1000000000"] {
            assert_eq!(format_open(parse_open(s).unwrap()), s);
        }
        assert_eq!(parse_open("7wei").unwrap(), U256::from(7));
        assert_eq!(parse_open(".5").unwrap(), one_open() / U256::from(2));
    }

    #[test]
    fn rejects_garbage_with_the_input_named() {
        for s in ["", "abc", "1.2.3", "-1", "0.0000000000000000001"] {
            let e = parse_open(s).unwrap_err();
            assert!(e.contains("invalid amount"), "{e}");
        }
    }
}
