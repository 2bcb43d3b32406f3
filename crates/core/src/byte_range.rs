//! The HTTP `Range: bytes=` header, resolved against a content length. Shared by the
//! registry mirror (which answers ranges of cached blobs), the demo's origin and the test
//! kit's origins, so every server in the product reads a range the same way.

/// A single `bytes=` range, resolved against the content length: (first, last) inclusive.
/// `None` for anything else: several ranges, another unit, a range outside the content, or
/// empty content.
pub fn parse(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let first: u64 = a.parse().ok()?;
        let last = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().ok()?.min(len - 1)
        };
        (first, last)
    };
    // `last` is at most `len - 1`, so `first <= last` also keeps `first` inside the content.
    (first <= last).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use proptest::prelude::*;

    #[test]
    fn single_ranges_resolve_and_others_are_refused() {
        assert_eq!(parse("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse("bytes=-1000", 100), Some((0, 99)));
        assert_eq!(parse("bytes=50-1000", 100), Some((50, 99)));
        assert_eq!(parse("bytes=100-", 100), None);
        assert_eq!(parse("bytes=0-1,5-6", 100), None);
        assert_eq!(parse("items=0-1", 100), None);
        assert_eq!(parse("bytes=9-1", 100), None);
        assert_eq!(parse("bytes=-0", 100), None);
        assert_eq!(parse("bytes=0-0", 0), None);
    }

    proptest! {
        /// Whatever the header says, an accepted range lies inside the content.
        #[test]
        fn an_accepted_range_lies_inside_the_content(v in ".{0,40}", len in 0u64..1 << 40) {
            if let Some((first, last)) = parse(&v, len) {
                prop_assert!(first <= last && last < len);
            }
        }

        /// A well-formed `first-last` inside the content comes back as written.
        #[test]
        fn an_inner_range_comes_back_as_written(len in 1u64..1 << 40, a in any::<u64>(), b in any::<u64>()) {
            let (first, last) = ((a % len).min(b % len), (a % len).max(b % len));
            prop_assert_eq!(parse(&format!("bytes={first}-{last}"), len), Some((first, last)));
        }
    }
}
