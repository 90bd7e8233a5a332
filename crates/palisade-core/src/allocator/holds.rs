//! A ledger for a store that learns of holders one change at a time.
//!
//! [`MemoryLedger`](super::MemoryLedger) owns its pool: every index below
//! the high-water mark was handed out by it. A ledger rebuilt from someone
//! else's records (the operator's watch events: claims that appear and
//! disappear, a workload's recorded subnet, a create still in flight) sees
//! subnets held anywhere, sometimes by several holders at once, and has no
//! reason to believe the used range is dense. [`HoldLedger`] counts holders
//! per index and keeps the maximal runs of held indices, so each change and
//! each allocation costs O(log n) in the held subnets, and [`allocate`]
//! decides from it exactly as from any other [`Ledger`].
//!
//! [`allocate`]: super::allocate

use super::{Ledger, SubnetIndex, Timestamp};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::convert::Infallible;

/// Held subnet indices with a holder count each.
///
/// An index is free when nobody holds it. The high-water mark is one past
/// the highest held index, so "the lowest recycled subnet" is the lowest
/// free index below it. An allocation is one more hold on the index it
/// returns; [`Ledger::recycle`] drops one hold, at once or when the
/// quarantine passed to it ends.
#[derive(Debug, Clone, Default)]
pub struct HoldLedger {
    counts: HashMap<SubnetIndex, u32>,
    /// Maximal runs of held indices: start → end (exclusive).
    runs: BTreeMap<SubnetIndex, SubnetIndex>,
    /// Holds to drop when their quarantine ends.
    due: BinaryHeap<Reverse<(Timestamp, SubnetIndex)>>,
}

impl HoldLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// One more hold on `index`.
    pub fn hold(&mut self, index: SubnetIndex) {
        let count = self.counts.entry(index).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.join(index);
        }
    }

    /// One hold fewer on `index`; false if nobody held it.
    pub fn release(&mut self, index: SubnetIndex) -> bool {
        let Some(count) = self.counts.get_mut(&index) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.counts.remove(&index);
            self.split(index);
        }
        true
    }

    /// Whether anybody holds `index`.
    pub fn is_held(&self, index: SubnetIndex) -> bool {
        self.counts.contains_key(&index)
    }

    /// How many distinct indices are held.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The lowest index nobody holds.
    pub fn lowest_free(&self) -> SubnetIndex {
        match self.runs.first_key_value() {
            Some((&0, &end)) => end,
            _ => 0,
        }
    }

    /// Adds `index` (newly held) to the runs, merging its neighbours.
    fn join(&mut self, index: SubnetIndex) {
        let next = index.saturating_add(1);
        let end = self.runs.remove(&next).unwrap_or(next);
        let start = match self.runs.range(..index).next_back() {
            Some((&s, &e)) if e == index => s,
            _ => index,
        };
        self.runs.insert(start, end);
    }

    /// Takes `index` (no longer held) out of its run.
    fn split(&mut self, index: SubnetIndex) {
        let Some((&start, &end)) = self.runs.range(..=index).next_back() else {
            return;
        };
        if index >= end {
            return;
        }
        self.runs.remove(&start);
        if start < index {
            self.runs.insert(start, index);
        }
        let after = index.saturating_add(1);
        if after < end {
            self.runs.insert(after, end);
        }
    }
}

impl Ledger for HoldLedger {
    type Error = Infallible;

    fn promote_due(&mut self, now: Timestamp) -> Result<(), Infallible> {
        while let Some(Reverse((at, index))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            self.release(index);
        }
        Ok(())
    }

    fn pop_lowest_recycled(&mut self) -> Result<Option<SubnetIndex>, Infallible> {
        let free = self.lowest_free();
        let high = self.high_water()?;
        Ok((free < high).then(|| {
            self.hold(free);
            free
        }))
    }

    fn high_water(&mut self) -> Result<SubnetIndex, Infallible> {
        Ok(self.runs.last_key_value().map_or(0, |(_, &end)| end))
    }

    fn set_high_water(&mut self, next: SubnetIndex) -> Result<(), Infallible> {
        // `allocate` moves the mark by one past the index it hands out:
        // that index is now held.
        if let Some(index) = next.checked_sub(1) {
            self.hold(index);
        }
        Ok(())
    }

    fn recycle(
        &mut self,
        index: SubnetIndex,
        now: Timestamp,
        available_at: Timestamp,
    ) -> Result<(), Infallible> {
        if available_at <= now {
            self.release(index);
        } else {
            self.due.push(Reverse((available_at, index)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::{MemoryLedger, allocate, release};
    use crate::pool::{Pool, SubnetLen};
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn pool(len: u8, reuse_after: u64) -> Pool {
        Pool::new(
            "fd00:ab::/96".parse().unwrap(),
            SubnetLen::try_from(len).unwrap(),
            Duration::from_secs(reuse_after),
        )
        .unwrap()
    }

    fn next(p: &Pool, l: &mut HoldLedger) -> Option<SubnetIndex> {
        match allocate(p, l, Timestamp(0)) {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }

    #[test]
    fn the_lowest_index_nobody_holds_comes_next_and_holders_are_counted() {
        let p = pool(112, 0);
        let mut l = HoldLedger::new();
        for i in [0, 1, 3, 5] {
            l.hold(i);
        }
        assert_eq!(next(&p, &mut l), Some(2));
        assert_eq!(next(&p, &mut l), Some(4));
        assert_eq!(next(&p, &mut l), Some(6));
        // Two holders of 1 (a claim and a workload's status): free only
        // when both let go.
        l.hold(1);
        l.release(1);
        assert_eq!(l.lowest_free(), 7);
        l.release(1);
        assert_eq!(next(&p, &mut l), Some(1));
        // A lone hold far away leaves everything below it free.
        let mut far = HoldLedger::new();
        far.hold(1 << 40);
        assert_eq!(next(&p, &mut far), Some(0));
        assert!(!far.release(7));
        assert_eq!(far.len(), 2);
    }

    #[test]
    fn a_full_pool_says_none() {
        let p = pool(98, 0);
        let mut l = HoldLedger::new();
        let got: Vec<_> = std::iter::from_fn(|| next(&p, &mut l)).collect();
        assert_eq!(got, [0, 1, 2, 3]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        /// Release the n-th live index (mod live count).
        Release(usize),
        Wait(u64),
    }

    proptest! {
        /// Against [`MemoryLedger`], the ledger that owns its pool: the
        /// same allocations and releases give the same subnets, quarantine
        /// included.
        #[test]
        fn hands_out_what_the_memory_ledger_hands_out(
            ops in proptest::collection::vec(prop_oneof![
                3 => Just(Op::Allocate),
                2 => any::<usize>().prop_map(Op::Release),
                1 => (0u64..50).prop_map(Op::Wait),
            ], 1..300),
            reuse_after in prop_oneof![Just(0u64), 1u64..40],
        ) {
            let p = pool(104, reuse_after);
            let (mut memory, mut holds) = (MemoryLedger::default(), HoldLedger::new());
            let mut live: Vec<SubnetIndex> = Vec::new();
            let mut now = Timestamp(1000);
            for op in ops {
                match op {
                    Op::Allocate => {
                        let want = allocate(&p, &mut memory, now).unwrap();
                        let got = allocate(&p, &mut holds, now).unwrap();
                        prop_assert_eq!(got, want);
                        live.extend(got);
                    }
                    Op::Release(n) if !live.is_empty() => {
                        let i = live.swap_remove(n % live.len());
                        release(&p, &mut memory, i, now).unwrap();
                        release(&p, &mut holds, i, now).unwrap();
                    }
                    Op::Release(_) => {}
                    Op::Wait(secs) => now = now.plus_secs(secs),
                }
                let distinct: BTreeSet<_> = live.iter().collect();
                prop_assert_eq!(distinct.len(), live.len());
            }
        }

        /// Runs always describe exactly the held indices.
        #[test]
        fn runs_are_the_held_indices(ops in proptest::collection::vec((any::<bool>(), 0u128..40), 1..200)) {
            let mut l = HoldLedger::new();
            let mut model: BTreeMap<u128, u32> = BTreeMap::new();
            for (hold, i) in ops {
                if hold {
                    l.hold(i);
                    *model.entry(i).or_default() += 1;
                } else {
                    let had = model.get(&i).copied().unwrap_or(0) > 0;
                    prop_assert_eq!(l.release(i), had);
                    if had {
                        *model.get_mut(&i).unwrap() -= 1;
                        if model[&i] == 0 {
                            model.remove(&i);
                        }
                    }
                }
                let from_runs: BTreeSet<u128> = l.runs.iter().flat_map(|(&s, &e)| s..e).collect();
                let held: BTreeSet<u128> = model.keys().copied().collect();
                prop_assert_eq!(&from_runs, &held);
                prop_assert_eq!(l.lowest_free(), (0..).find(|i| !held.contains(i)).unwrap());
                // Maximal: no two runs touch.
                prop_assert!(l.runs.iter().zip(l.runs.iter().skip(1)).all(|(a, b)| a.1 < b.0));
            }
        }
    }
}
