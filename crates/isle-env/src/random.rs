//! Randomness behind a seam: every draw comes from a generator seeded by the caller.

use rand::{RngCore, SeedableRng, TryRngCore, rngs::StdRng};

/// A source of random numbers owned by one component. Seeded, never global.
pub trait Random: Send + 'static {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64;

    /// A uniformly random value in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for jitter and sampling, and branch-free.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// A deterministic generator: the same seed gives the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    rng: StdRng,
    seed: u64,
}

impl SeededRandom {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandom {
            rng: StdRng::seed_from_u64(seed),
            seed,
        }
    }

    /// A generator seeded from the OS; log [`SeededRandom::seed`] so a run can be replayed.
    pub fn from_os() -> Self {
        Self::new(rand::rngs::OsRng.try_next_u64().unwrap_or(0x1513_u64))
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A child generator for another component, derived deterministically from this one.
    pub fn fork(&mut self) -> SeededRandom {
        SeededRandom::new(self.rng.next_u64())
    }
}

impl Random for SeededRandom {
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SeededRandom::new(7);
        let mut b = SeededRandom::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SeededRandom::new(1);
        for bound in [1u64, 2, 3, 10, 1000] {
            for _ in 0..200 {
                assert!(r.below(bound) < bound);
            }
        }
        assert_eq!(r.below(0), 0);
    }
}
