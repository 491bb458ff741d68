//! etcd's `range_end` conventions turned into BTreeMap bounds.

use std::ops::Bound;

/// Lower and upper bound of a non-empty key range.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The set of keys a request names: one key, every key from a key on, or a half-open range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `range_end == b"\0"`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)` with `key < range_end`.
    Between(&'a [u8], &'a [u8]),
    /// `range_end <= key`: no key at all.
    Empty,
}

impl<'a> KeyRange<'a> {
    /// Interprets `(key, range_end)` the way etcd does.
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end if end > key => KeyRange::Between(key, end),
            _ => KeyRange::Empty,
        }
    }

    /// Whether `candidate` is in the range.
    pub(crate) fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => candidate == key,
            KeyRange::From(key) => candidate >= key,
            KeyRange::Between(key, end) => candidate >= key && candidate < end,
            KeyRange::Empty => false,
        }
    }

    /// Bounds for `BTreeMap::range`; `None` for the empty range (which `range` would reject).
    pub(crate) fn bounds(&self) -> Option<KeyBounds<'a>> {
        match *self {
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::From(key) => Some((Bound::Included(key), Bound::Unbounded)),
            KeyRange::Between(key, end) => Some((Bound::Included(key), Bound::Excluded(end))),
            KeyRange::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_conventions() {
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], bool);
        let cases: [Case; 8] = [
            (b"a", b"", b"a", true),
            (b"a", b"", b"ab", false),
            (b"a", b"\0", b"zzz", true),
            (b"b", b"\0", b"a", false),
            (b"\0", b"\0", b"a", true),
            (b"a", b"c", b"b", true),
            (b"a", b"c", b"c", false),
            (b"c", b"a", b"b", false),
        ];
        for (key, end, candidate, expected) in cases {
            let range = KeyRange::new(key, end);
            assert_eq!(
                range.contains(candidate),
                expected,
                "{key:?}..{end:?} ∋ {candidate:?}"
            );
        }
        assert_eq!(KeyRange::new(b"c", b"a").bounds(), None);
        assert_eq!(KeyRange::new(b"a", b"a").bounds(), None);
    }
}
