//! Human-readable byte sizes (`256MiB`, `1GiB`, `4MB`, `1048576`) for flags and config.

/// Why a size string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {0:?}: expected a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)")]
pub struct SizeError(pub String);

/// Parses a size such as `256MiB` or `10 MB` into bytes.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError(input.to_string());
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(err()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(err);
    }
    let f: f64 = num.parse().map_err(|_| err())?;
    let bytes = f * mult as f64;
    // The number holds only digits and dots, so it is never negative.
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plain_numbers_parse() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("42"), Ok(42));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "MiB", "12XB", "-1", "99999999999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_unit_scales_and_sizes_past_u64_are_refused() {
        for (text, bytes) in [
            ("3k", 3_000),
            ("3KB", 3_000),
            ("2g", 2_000_000_000),
            ("2GB", 2_000_000_000),
            ("1t", 1_000_000_000_000),
            ("1tb", 1_000_000_000_000),
            ("1TiB", 1 << 40),
            ("1.5tib", 3 << 39),
            ("0.5KiB", 512),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        // Past u64 as a fraction, and as a number too long for an f64 to be finite.
        assert!(parse_size("20000000000000000000.5").is_err());
        assert!(parse_size(&format!("1{}.5", "0".repeat(400))).is_err());
    }
}
