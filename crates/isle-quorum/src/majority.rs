//! Counting arithmetic on plain node counts: majorities and read/write quorum overlap.
//!
//! All functions are total on `usize`: they neither overflow nor panic.

/// The smallest number of nodes that is more than half of `n`: `floor(n/2) + 1`.
///
/// `majority(0) == 1`: an empty cluster can never gather a quorum, which is the safe answer.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// How many of `n` nodes may fail while the rest still form a majority: `n - majority(n)`.
///
/// Even sizes buy nothing: `tolerated_failures(4) == tolerated_failures(3) == 1`. Zero for `n == 0`.
pub fn tolerated_failures(n: usize) -> usize {
    n.saturating_sub(majority(n))
}

/// Whether every read quorum of `r` meets every write quorum of `w` among `n` replicas: `R + W > N`.
pub fn read_write_overlap(n: usize, r: usize, w: usize) -> bool {
    // Widened so that the sum cannot overflow.
    r as u128 + w as u128 > n as u128
}

/// Whether any two write quorums of `w` among `n` replicas intersect: `2W > N`.
pub fn write_write_overlap(n: usize, w: usize) -> bool {
    2 * w as u128 > n as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities_and_tolerance() {
        // (n, majority, tolerated failures)
        let table = [
            (0, 1, 0),
            (1, 1, 0),
            (2, 2, 0),
            (3, 2, 1),
            (4, 3, 1),
            (5, 3, 2),
            (6, 4, 2),
            (7, 4, 3),
        ];
        for (n, need, tolerated) in table {
            assert_eq!(majority(n), need, "majority({n})");
            assert_eq!(tolerated_failures(n), tolerated, "tolerated_failures({n})");
        }
        assert_eq!(tolerated_failures(usize::MAX), usize::MAX / 2);
    }

    #[test]
    fn overlaps() {
        // (n, r, w, read/write overlap, write/write overlap)
        let table = [
            (3, 2, 2, true, true),
            (3, 1, 3, true, true),
            (3, 1, 2, false, true),
            (3, 1, 1, false, false),
            (4, 2, 2, false, false),
            (4, 2, 3, true, true),
            (5, 3, 3, true, true),
            (6, 3, 3, false, false),
            (6, 3, 4, true, true),
            (2, 1, 2, true, true),
            (usize::MAX, usize::MAX, usize::MAX, true, true),
            (usize::MAX, 0, usize::MAX / 2 + 1, false, true),
        ];
        for (n, r, w, rw, ww) in table {
            assert_eq!(
                read_write_overlap(n, r, w),
                rw,
                "R+W>N for n={n} r={r} w={w}"
            );
            assert_eq!(write_write_overlap(n, w), ww, "2W>N for n={n} w={w}");
        }
    }
}
