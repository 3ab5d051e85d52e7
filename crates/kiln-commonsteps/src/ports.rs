//! Picking free host ports in a range (Packer's `host_port_min/max`,
//! `vnc_port_min/max`, `http_port_min/max`).
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::TcpListener;

/// A random seed for [`pick`] (from `rand`'s thread generator, seeded by
/// the OS): concurrent builds start their search at different ports.
pub fn seed() -> u64 {
    rand::random()
}

/// The first port, starting at an offset in `[min, max]` drawn from
/// `seed` (the same seed, the same start) and wrapping around, that `free`
/// accepts and that is not in `exclude`.
pub fn pick(
    min: u16,
    max: u16,
    seed: u64,
    exclude: &[u16],
    free: impl Fn(u16) -> bool,
) -> Option<u16> {
    if min > max {
        return None;
    }
    let span = u32::from(max - min) + 1;
    let start = StdRng::seed_from_u64(seed).gen_range(0..span);
    (0..span)
        .map(|i| min + ((start + i) % span) as u16)
        .find(|p| !exclude.contains(p) && free(*p))
}

/// Whether a TCP port can be bound on `addr` right now.
pub fn tcp_free(addr: &str, port: u16) -> bool {
    TcpListener::bind((addr, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_within_the_range_skipping_busy_and_excluded_ports() {
        for seed in 0..50u64 {
            let p = pick(2222, 2225, seed, &[], |_| true).unwrap();
            assert!((2222..=2225).contains(&p));
        }
        // Only 2224 is free.
        assert_eq!(pick(2222, 2225, 7, &[], |p| p == 2224), Some(2224));
        // Excluded even if free.
        assert_eq!(pick(2222, 2225, 7, &[2224], |p| p == 2224), None);
        assert_eq!(pick(5, 4, 1, &[], |_| true), None);
        assert_eq!(pick(4444, 4444, 9, &[], |_| true), Some(4444));
        // Different seeds spread over the range.
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..100u64 {
            seen.insert(pick(2222, 4444, seed * 7919 + 1, &[], |_| true).unwrap());
        }
        assert!(seen.len() > 50, "{}", seen.len());
    }

    #[test]
    fn a_bound_port_is_not_free() {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!tcp_free("127.0.0.1", port));
        drop(l);
        assert!(tcp_free("127.0.0.1", port));
    }
}
