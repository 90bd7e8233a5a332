//! Subnet allocation with recycling.
//!
//! The rule, written once here and obeyed by every store:
//! 1. subnets whose quarantine has ended become recycled;
//! 2. the lowest recycled subnet is handed out first;
//! 3. otherwise the next never-used subnet (the high-water mark moves up).
//!
//! Because fresh subnets are taken strictly in order, every index below the
//! high-water mark is in exactly one of three states — allocated, recycled or
//! quarantined — and nothing above it has ever been used. Cost therefore
//! depends on how many subnets have been used, never on the pool's capacity
//! (a /48 holds 2^48 /96s).
//!
//! Where the free lists live is a [`Ledger`]'s business: [`MemoryLedger`]
//! keeps them in bit sets, the SQLite store in indexed tables. Both go
//! through [`allocate`] and [`release`], so they cannot disagree on which
//! subnet comes next. [`HoldLedger`] serves stores that learn of holders
//! one change at a time (the operator's watch events).

mod holds;

pub use holds::HoldLedger;

use crate::bitset::MinBitSet;
use crate::pool::Pool;
use ipnet::Ipv6Net;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::convert::Infallible;
use std::fmt;

/// Position of a subnet in its pool: subnet `i` starts at
/// `pool + i << (128 - subnet_len)`.
pub type SubnetIndex = u128;

/// Seconds since the Unix epoch. The core reads no clock; callers pass this.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This instant plus a number of seconds, saturating.
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Storage for the free side of a pool: the high-water mark, the recycled
/// set and the quarantine.
pub trait Ledger {
    /// What can go wrong in the backing storage.
    type Error;

    /// Moves every quarantined subnet available at or before `now` into the
    /// recycled set.
    fn promote_due(&mut self, now: Timestamp) -> Result<(), Self::Error>;
    /// Removes and returns the lowest recycled index.
    fn pop_lowest_recycled(&mut self) -> Result<Option<SubnetIndex>, Self::Error>;
    /// The lowest never-used index.
    fn high_water(&mut self) -> Result<SubnetIndex, Self::Error>;
    /// Moves the high-water mark.
    fn set_high_water(&mut self, next: SubnetIndex) -> Result<(), Self::Error>;
    /// Makes `index` available again at `available_at`: recycled at once if
    /// that is not in the future relative to `now`, else quarantined.
    fn recycle(
        &mut self,
        index: SubnetIndex,
        now: Timestamp,
        available_at: Timestamp,
    ) -> Result<(), Self::Error>;
}

/// Picks the next subnet per the module's rule; `None` when the pool is full.
pub fn allocate<L: Ledger>(
    pool: &Pool,
    ledger: &mut L,
    now: Timestamp,
) -> Result<Option<SubnetIndex>, L::Error> {
    ledger.promote_due(now)?;
    if let Some(index) = ledger.pop_lowest_recycled()? {
        return Ok(Some(index));
    }
    let next = ledger.high_water()?;
    if next >= pool.capacity() {
        return Ok(None);
    }
    ledger.set_high_water(next + 1)?;
    Ok(Some(next))
}

/// Returns `index` to the pool, quarantined for the pool's `reuse_after`.
/// The caller must know `index` is allocated (the store knows it from the
/// deployment it deletes; [`SubnetAllocator`] checks).
pub fn release<L: Ledger>(
    pool: &Pool,
    ledger: &mut L,
    index: SubnetIndex,
    now: Timestamp,
) -> Result<(), L::Error> {
    ledger.recycle(index, now, now.plus_secs(pool.reuse_after().as_secs()))
}

/// How a pool is used. Every count is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolUsage {
    /// Subnets the pool holds.
    pub capacity: u128,
    /// Subnets held by deployments.
    pub allocated: u128,
    /// Released subnets that the next allocations will reuse.
    pub recycled_available: u128,
    /// Released subnets still waiting out `reuse_after`.
    pub quarantined: u128,
    /// Subnets never handed out.
    pub never_used: u128,
}

impl PoolUsage {
    /// Counts from the high-water mark and the free lists' sizes.
    pub fn new(pool: &Pool, high_water: u128, recycled: u128, quarantined: u128) -> Self {
        let capacity = pool.capacity();
        Self {
            capacity,
            allocated: high_water.saturating_sub(recycled + quarantined),
            recycled_available: recycled,
            quarantined,
            never_used: capacity.saturating_sub(high_water),
        }
    }

    /// Allocated share of capacity, 0.0 to 1.0.
    pub fn utilisation(&self) -> f64 {
        self.allocated as f64 / self.capacity as f64
    }
}

/// An in-memory [`Ledger`]: bit sets over the used range, so the free side
/// costs about two bits per subnet ever used, and allocation is a few word
/// operations.
#[derive(Debug, Clone, Default)]
pub struct MemoryLedger {
    high_water: usize,
    recycled: MinBitSet,
    quarantined: MinBitSet,
    due: BinaryHeap<Reverse<(Timestamp, usize)>>,
}

impl MemoryLedger {
    /// Heap bytes held, for the memory benchmark.
    pub fn heap_bytes(&self) -> usize {
        self.recycled.heap_bytes()
            + self.quarantined.heap_bytes()
            + self.due.capacity() * std::mem::size_of::<Reverse<(Timestamp, usize)>>()
    }
}

/// An index beyond what memory could ever have counted up to.
fn small(index: SubnetIndex) -> usize {
    usize::try_from(index).unwrap_or(usize::MAX)
}

impl Ledger for MemoryLedger {
    type Error = Infallible;

    fn promote_due(&mut self, now: Timestamp) -> Result<(), Infallible> {
        while let Some(Reverse((at, index))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            self.quarantined.remove(index);
            self.recycled.insert(index);
        }
        Ok(())
    }

    fn pop_lowest_recycled(&mut self) -> Result<Option<SubnetIndex>, Infallible> {
        Ok(self.recycled.pop_min().map(|i| i as SubnetIndex))
    }

    fn high_water(&mut self) -> Result<SubnetIndex, Infallible> {
        Ok(self.high_water as SubnetIndex)
    }

    fn set_high_water(&mut self, next: SubnetIndex) -> Result<(), Infallible> {
        self.high_water = small(next);
        Ok(())
    }

    fn recycle(
        &mut self,
        index: SubnetIndex,
        now: Timestamp,
        available_at: Timestamp,
    ) -> Result<(), Infallible> {
        let index = small(index);
        if available_at <= now {
            self.recycled.insert(index);
        } else {
            self.quarantined.insert(index);
            self.due.push(Reverse((available_at, index)));
        }
        Ok(())
    }
}

/// Why an in-memory allocation or release failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every subnet is allocated or quarantined.
    #[error(
        "subnet pool {pool} is exhausted: all {capacity} /{len} subnets are allocated or quarantined"
    )]
    Exhausted {
        /// The pool.
        pool: Ipv6Net,
        /// Its capacity.
        capacity: u128,
        /// Its subnet length.
        len: u8,
    },
    /// A release of a subnet that is not allocated.
    #[error("subnet {0} is not allocated")]
    NotAllocated(Ipv6Net),
    /// A subnet from another pool.
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
}

/// A pool with its ledger in memory: what the benchmarks, the property tests
/// and in-process users (the operator's planner, bulk imports) use.
#[derive(Debug, Clone)]
pub struct SubnetAllocator {
    pool: Pool,
    ledger: MemoryLedger,
}

impl SubnetAllocator {
    /// An empty allocator over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            ledger: MemoryLedger::default(),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Hands out the next subnet.
    pub fn allocate(&mut self, now: Timestamp) -> Result<Ipv6Net, AllocError> {
        match allocate(&self.pool, &mut self.ledger, now) {
            Ok(Some(index)) => Ok(self.pool.subnet(index)),
            Ok(None) => Err(AllocError::Exhausted {
                pool: self.pool.cidr(),
                capacity: self.pool.capacity(),
                len: self.pool.subnet_len().get(),
            }),
            Err(never) => match never {},
        }
    }

    /// Gives `subnet` back for recycling.
    pub fn release(&mut self, subnet: Ipv6Net, now: Timestamp) -> Result<(), AllocError> {
        let index = self.pool.index_of(subnet)?;
        if !self.is_allocated(index) {
            return Err(AllocError::NotAllocated(subnet));
        }
        match release(&self.pool, &mut self.ledger, index, now) {
            Ok(()) => Ok(()),
            Err(never) => match never {},
        }
    }

    /// Whether the subnet at `index` is held by someone.
    pub fn is_allocated(&self, index: SubnetIndex) -> bool {
        let i = small(index);
        index < self.ledger.high_water as u128
            && !self.ledger.recycled.contains(i)
            && !self.ledger.quarantined.contains(i)
    }

    /// Counts as of `now`: subnets whose quarantine has ended count as
    /// recycled, as the SQLite store reports them.
    pub fn usage(&mut self, now: Timestamp) -> PoolUsage {
        match self.ledger.promote_due(now) {
            Ok(()) => {}
            Err(never) => match never {},
        }
        PoolUsage::new(
            &self.pool,
            self.ledger.high_water as u128,
            self.ledger.recycled.len() as u128,
            self.ledger.quarantined.len() as u128,
        )
    }

    /// Heap bytes held by the ledger.
    pub fn heap_bytes(&self) -> usize {
        self.ledger.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::SubnetLen;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn pool(cidr: &str, len: u8, reuse_after: u64) -> Pool {
        Pool::new(
            cidr.parse().unwrap(),
            SubnetLen::try_from(len).unwrap(),
            Duration::from_secs(reuse_after),
        )
        .unwrap()
    }

    #[test]
    fn seed_recycling_scenario_reuses_app1s_subnet() {
        let mut a = SubnetAllocator::new(pool("fd00::/48", 96, 0));
        let now = Timestamp(1);
        let app1 = a.allocate(now).unwrap();
        let app2 = a.allocate(now).unwrap();
        assert_ne!(app1, app2);
        a.release(app1, now).unwrap();
        let app3 = a.allocate(now).unwrap();
        assert_eq!(app3, app1);
        assert_eq!(a.usage(now).allocated, 2);
        assert_eq!(a.usage(now).recycled_available, 0);
    }

    #[test]
    fn quarantine_keeps_a_subnet_out_until_it_ends() {
        let mut a = SubnetAllocator::new(pool("fd00::/48", 96, 60));
        let s0 = a.allocate(Timestamp(0)).unwrap();
        a.release(s0, Timestamp(10)).unwrap();
        assert_eq!(a.usage(Timestamp(10)).quarantined, 1);
        let s1 = a.allocate(Timestamp(69)).unwrap();
        assert_ne!(s1, s0, "quarantined subnet handed out early");
        let s2 = a.allocate(Timestamp(70)).unwrap();
        assert_eq!(s2, s0, "subnet not reused once quarantine ended");
    }

    #[test]
    fn exhaustion_and_double_release_are_errors() {
        let mut a = SubnetAllocator::new(pool("fd00::/64", 65, 0));
        let s0 = a.allocate(Timestamp(0)).unwrap();
        a.allocate(Timestamp(0)).unwrap();
        let e = a.allocate(Timestamp(0)).unwrap_err();
        assert!(
            e.to_string().contains("exhausted: all 2 /65 subnets"),
            "{e}"
        );
        a.release(s0, Timestamp(0)).unwrap();
        assert_eq!(
            a.release(s0, Timestamp(0)),
            Err(AllocError::NotAllocated(s0))
        );
        assert!(
            a.release("fd01::/65".parse().unwrap(), Timestamp(0))
                .is_err()
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        /// Release the n-th live subnet (mod live count).
        Release(usize),
        /// Let time pass.
        Wait(u64),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                3 => Just(Op::Allocate),
                2 => any::<usize>().prop_map(Op::Release),
                1 => (0u64..50).prop_map(Op::Wait),
            ],
            1..300,
        )
    }

    proptest! {
        /// Across random allocate/release sequences: live subnets never
        /// overlap, lie in the pool aligned to their length, and a released
        /// subnet comes back (lowest first) before any never-used one, but
        /// not before its quarantine ends.
        #[test]
        fn allocations_are_disjoint_aligned_and_recycled_first(
            ops in ops(),
            len in 100u8..=120,
            reuse_after in prop_oneof![Just(0u64), 1u64..40],
        ) {
            let p = pool("fd00:ab::/96", len, reuse_after);
            let mut a = SubnetAllocator::new(p.clone());
            let mut live: Vec<Ipv6Net> = Vec::new();
            let mut released: Vec<(Ipv6Net, Timestamp)> = Vec::new();
            let mut ever: BTreeSet<Ipv6Net> = BTreeSet::new();
            let mut now = Timestamp(1000);
            for op in ops {
                match op {
                    Op::Allocate => {
                        let available: BTreeSet<Ipv6Net> = released
                            .iter()
                            .filter(|(_, at)| at.0 + reuse_after <= now.0)
                            .map(|(s, _)| *s)
                            .collect();
                        match a.allocate(now) {
                            Ok(s) => {
                                prop_assert!(p.cidr().contains(&s));
                                prop_assert_eq!(s.prefix_len(), len);
                                prop_assert_eq!(s.network(), s.addr());
                                prop_assert!(live.iter().all(|l| !l.contains(&s) && !s.contains(l)));
                                if let Some(lowest) = available.first() {
                                    prop_assert_eq!(s, *lowest, "recycled subnet not reused lowest-first");
                                } else {
                                    prop_assert!(!ever.contains(&s), "quarantined subnet reused early");
                                }
                                released.retain(|(r, _)| *r != s);
                                ever.insert(s);
                                live.push(s);
                            }
                            Err(AllocError::Exhausted { .. }) => {
                                prop_assert!(available.is_empty());
                                prop_assert_eq!(live.len() as u128 + released.len() as u128, p.capacity());
                            }
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::Release(n) if !live.is_empty() => {
                        let s = live.swap_remove(n % live.len());
                        a.release(s, now).unwrap();
                        released.push((s, now));
                    }
                    Op::Release(_) => {}
                    Op::Wait(secs) => now = now.plus_secs(secs),
                }
                let u = a.usage(now);
                prop_assert_eq!(u.allocated, live.len() as u128);
                prop_assert_eq!(u.allocated + u.recycled_available + u.quarantined + u.never_used, u.capacity);
            }
        }
    }
}
