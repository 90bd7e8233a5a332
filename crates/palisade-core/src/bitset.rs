//! A growable bit set that finds its lowest member in O(log64 n).
//!
//! The allocator needs "the lowest recycled subnet" on every allocation. A
//! `BTreeSet<u128>` would do it in O(log n) but costs ~30 bytes and a pointer
//! chase per member; subnet indices below the high-water mark are dense, so a
//! summary tree of 64-bit words does the same in a handful of `trailing_zeros`
//! and one bit per index.

/// Set of `usize` indices with `pop_min` in O(log64 n).
#[derive(Debug, Clone, Default)]
pub(crate) struct MinBitSet {
    /// `levels[0]` holds one bit per index; `levels[k + 1]` one bit per
    /// non-zero word of `levels[k]`. The last level is a single word.
    levels: Vec<Vec<u64>>,
    len: usize,
}

impl MinBitSet {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, index: usize) -> bool {
        self.levels
            .first()
            .and_then(|words| words.get(index / 64))
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }

    /// Adds `index`; returns false if it was already present.
    pub(crate) fn insert(&mut self, index: usize) -> bool {
        self.grow_to(index);
        let mut i = index;
        for (level, words) in self.levels.iter_mut().enumerate() {
            let word = &mut words[i / 64];
            let was_empty = *word == 0;
            let bit = 1u64 << (i % 64);
            if level == 0 && *word & bit != 0 {
                return false;
            }
            *word |= bit;
            if !was_empty {
                break;
            }
            i /= 64;
        }
        self.len += 1;
        true
    }

    /// Removes `index`; returns false if it was not present.
    pub(crate) fn remove(&mut self, index: usize) -> bool {
        if !self.contains(index) {
            return false;
        }
        let mut i = index;
        for words in &mut self.levels {
            let word = &mut words[i / 64];
            *word &= !(1u64 << (i % 64));
            if *word != 0 {
                break;
            }
            i /= 64;
        }
        self.len -= 1;
        true
    }

    pub(crate) fn min(&self) -> Option<usize> {
        let top = self.levels.last()?;
        if top[0] == 0 {
            return None;
        }
        let mut i = 0usize;
        for words in self.levels.iter().rev() {
            i = i * 64 + words[i].trailing_zeros() as usize;
        }
        Some(i)
    }

    pub(crate) fn pop_min(&mut self) -> Option<usize> {
        let min = self.min()?;
        self.remove(min);
        Some(min)
    }

    /// Bytes of heap this set holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.levels.iter().map(|l| l.capacity() * 8).sum::<usize>()
            + self.levels.capacity() * std::mem::size_of::<Vec<u64>>()
    }

    /// Makes room for `index`, adding summary levels as the set grows so the
    /// top level stays a single word.
    fn grow_to(&mut self, index: usize) {
        let mut needed = index / 64 + 1;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                // A new summary level: its bits for existing non-empty words
                // must be set.
                let below = if level == 0 {
                    None
                } else {
                    Some(&self.levels[level - 1])
                };
                let mut words = vec![0u64; needed];
                if let Some(below) = below {
                    for (j, w) in below.iter().enumerate() {
                        if *w != 0 {
                            words[j / 64] |= 1 << (j % 64);
                        }
                    }
                }
                self.levels.push(words);
            } else if self.levels[level].len() < needed {
                self.levels[level].resize(needed, 0);
            }
            if self.levels[level].len() == 1 && level + 1 == self.levels.len() {
                return;
            }
            needed = self.levels[level].len().div_ceil(64);
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(ops in proptest::collection::vec((0u8..3, 0usize..300_000), 1..400)) {
            let mut ours = MinBitSet::default();
            let mut model = BTreeSet::new();
            for (op, i) in ops {
                match op {
                    0 => prop_assert_eq!(ours.insert(i), model.insert(i)),
                    1 => prop_assert_eq!(ours.remove(i), model.remove(&i)),
                    _ => prop_assert_eq!(ours.pop_min(), model.pop_first()),
                }
                prop_assert_eq!(ours.len(), model.len());
                prop_assert_eq!(ours.min(), model.first().copied());
            }
        }
    }
}
