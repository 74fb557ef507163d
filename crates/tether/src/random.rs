//! The one source of random numbers in the runtime: request ids, reconnect jitter, names of
//! temporary files. None of these needs to be secret (challenge seeds use the operating
//! system's generator directly, in `auth.rs`, and fail loudly if it fails), so when the
//! system generator is unavailable this falls back to the standard library's per-process
//! random hash keys instead of failing.

/// A random `u64`.
pub(crate) fn u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    })
}

/// A random number below `n` (`n` > 0), for small ranges where the modulo bias of a 64-bit
/// source does not matter.
pub(crate) fn below(n: u64) -> u64 {
    u64() % n.max(1)
}

/// A four-digit decimal id, `"0000"` to `"9999"`, as clever-show writes request and server
/// ids.
pub(crate) fn four_digits() -> String {
    format!("{:04}", below(10_000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_stays_in_range_and_four_digits_are_four_digits() {
        for _ in 0..1_000 {
            assert!(super::below(7) < 7);
            let id = super::four_digits();
            assert_eq!(id.len(), 4, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        }
        // Not constant.
        let draws: std::collections::HashSet<u64> = (0..100).map(|_| super::u64()).collect();
        assert!(draws.len() > 90);
    }
}
