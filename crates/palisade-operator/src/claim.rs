//! Subnet claims: one cluster-scoped object per allocated subnet.
//!
//! Kubernetes allocates Service IPs the same way (`IPAddress` objects named
//! by the address): the API server refuses a second object of one name, so
//! creating the claim *is* the allocation, atomically, across replicas and
//! concurrent reconciles. No lock, no leader needed for correctness.
//!
//! Which subnet to try is the core's rule ([`palisade_core::allocator`]):
//! the lowest free index below the high-water mark (a recycled subnet),
//! else the next never-used one, over the core's [`HoldLedger`].
//! [`ClaimLedger`] keeps what holds a subnet (claims, workload statuses,
//! this process's reservations) from one change to the next, so a
//! candidate costs O(log n); a name conflict (409) means someone else just
//! took the candidate, which stays marked used, and the next one is tried.
//!
//! ## Names
//! A custom resource's name must be a DNS-1123 subdomain, which has no `:`
//! or `/`. The name is the RFC 5952 canonical text with every `:` replaced
//! by `-`, then `-` and the prefix length: `fd00:1234:5678::/96` becomes
//! `fd00-1234-5678---96`, `fd00:1234:5678::1:0:0/96` becomes
//! `fd00-1234-5678--1-0-0-96`. Decoding splits at the last `-` and puts the
//! colons back. A canonical text that starts with `::` (a pool inside
//! `::/16`) would start the name with `-`, so it is written `0::` instead,
//! which denotes the same address. [`subnet_of`] accepts only names that
//! [`claim_name`] produces, so every subnet has exactly one name.

use crate::crd::SubnetClaim;
use ipnet::Ipv6Net;
use kube::ResourceExt;
use palisade_core::Pool;
use palisade_core::allocator::{HoldLedger, SubnetIndex, Timestamp, allocate};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

/// The claim object's name for `subnet`.
pub fn claim_name(subnet: Ipv6Net) -> String {
    let text = subnet.network().to_string();
    let text = match text.strip_prefix("::") {
        Some(rest) => format!("0::{rest}"),
        None => text,
    };
    format!("{}-{}", text.replace(':', "-"), subnet.prefix_len())
}

/// The subnet a claim name stands for; `None` if the name is not one that
/// [`claim_name`] produces.
pub fn subnet_of(name: &str) -> Option<Ipv6Net> {
    let (addr, len) = name.rsplit_once('-')?;
    if len.is_empty() || len.starts_with('0') && len != "0" {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let addr: Ipv6Addr = addr.replace('-', ":").parse().ok()?;
    let net = Ipv6Net::new(addr, len).ok()?;
    (net.network() == addr && claim_name(net) == name).then_some(net)
}

/// How long a reservation outlives its claim's creation if the cache never
/// shows the claim (it was deleted before its watch event arrived).
pub const RESERVATION_TTL: Duration = Duration::from_secs(300);

/// The pool's used subnets, kept up to date one change at a time: what the
/// claims cache holds (from its watch events, relists included), the
/// subnets workload statuses name (in use even while their claim is
/// missing, about to be repaired), and this process's reservations (a
/// create in flight, a create the cache does not show yet, a candidate
/// another claimant won). A subnet is free when none of them holds it;
/// which free subnet comes next is the core's rule over a
/// [`HoldLedger`], so a candidate costs O(log n), not a pass over every
/// claim and workload.
///
/// Subnets are handed back by deleting their claim; a released claim in
/// quarantine still exists, so it still holds its subnet. Claims that
/// overlap the pool without being one of its subnets (another prefix
/// length, another pool) are kept apart: allocating while any exists could
/// hand out a subnet inside a live one, so the operator refuses
/// ([`ClaimLedger::foreign`]).
#[derive(Debug, Clone)]
pub struct ClaimLedger {
    pool: Pool,
    held: HoldLedger,
    /// Cached claims that are subnets of the pool, by name.
    claims: HashMap<String, SubnetIndex>,
    /// Cached claims overlapping the pool without being its subnets.
    foreign: BTreeMap<String, Ipv6Net>,
    /// Subnets named in workload statuses, by workload (`namespace/name`).
    statuses: HashMap<String, SubnetIndex>,
    /// This process's claims the cache does not show yet, by name.
    reserved: HashMap<String, Reservation>,
    /// Reservations in the order they were made or renewed, to expire them.
    made: VecDeque<(Instant, String)>,
}

/// A claim of this process that the cache does not show yet.
#[derive(Debug, Clone)]
struct Reservation {
    index: SubnetIndex,
    /// The created claim; `None` while the create is in flight or after
    /// another claimant won the name.
    claim: Option<SubnetClaim>,
    at: Instant,
}

impl ClaimLedger {
    /// Nothing used yet in `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            held: HoldLedger::new(),
            claims: HashMap::new(),
            foreign: BTreeMap::new(),
            statuses: HashMap::new(),
            reserved: HashMap::new(),
            made: VecDeque::new(),
        }
    }

    /// A ledger over the claims named `names` (from one LIST).
    pub fn from_names<'a>(pool: &Pool, names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ledger = Self::new(pool.clone());
        for name in names {
            ledger.claim_seen(name);
        }
        ledger
    }

    /// Claims that overlap `pool` without being one of its subnets: left
    /// by an earlier configuration (another prefix length, or a pool that
    /// contains or is contained in this one).
    pub fn foreign_overlaps<'a>(
        pool: &Pool,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Ipv6Net> {
        names
            .into_iter()
            .filter_map(subnet_of)
            .filter(|s| overlaps_foreign(pool, *s))
            .collect()
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The claim `name` is in the cache (created, updated or relisted).
    pub fn claim_seen(&mut self, name: &str) {
        let Some(subnet) = subnet_of(name) else {
            return;
        };
        if let Ok(index) = self.pool.index_of(subnet) {
            if self.claims.insert(name.to_owned(), index).is_none() {
                self.held.hold(index);
            }
        } else if overlaps_foreign(&self.pool, subnet) {
            self.foreign.insert(name.to_owned(), subnet);
        }
        // The cache shows it now: its own hold replaces the reservation.
        self.unreserve(name);
    }

    /// The claim `name` is gone from the cache.
    pub fn claim_gone(&mut self, name: &str) {
        if let Some(index) = self.claims.remove(name) {
            self.held.release(index);
        }
        self.foreign.remove(name);
        self.unreserve(name);
    }

    /// The workload `key` (`namespace/name`) names `subnet` in its status
    /// (`None`: no subnet, or the workload is gone).
    pub fn workload_subnet(&mut self, key: &str, subnet: Option<Ipv6Net>) {
        let index = subnet.and_then(|s| self.pool.index_of(s).ok());
        let old = match index {
            Some(i) => self.statuses.insert(key.to_owned(), i),
            None => self.statuses.remove(key),
        };
        if old == index {
            return;
        }
        if let Some(i) = index {
            self.held.hold(i);
        }
        if let Some(o) = old {
            self.held.release(o);
        }
    }

    /// Cached claims overlapping the pool without being its subnets.
    pub fn foreign(&self) -> Vec<Ipv6Net> {
        self.foreign.values().copied().collect()
    }

    /// How many subnets are used.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is used.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The next subnet to try, per the core rule, reserved until
    /// [`ClaimLedger::won`], [`ClaimLedger::unreserve`], the cache showing
    /// its claim, or [`RESERVATION_TTL`]; `None` when the pool is full. A
    /// candidate someone else won (409) stays reserved: the cache will
    /// show the winner's claim.
    pub fn reserve_next(&mut self, now: Instant) -> Option<SubnetIndex> {
        self.expire(now);
        let index = match allocate(&self.pool, &mut self.held, Timestamp(0)) {
            Ok(found) => found?,
            Err(never) => match never {},
        };
        let name = claim_name(self.pool.subnet(index));
        self.made.push_back((now, name.clone()));
        let reservation = Reservation {
            index,
            claim: None,
            at: now,
        };
        if let Some(old) = self.reserved.insert(name, reservation) {
            self.held.release(old.index);
        }
        Some(index)
    }

    /// The next subnet to try, per the core rule, marked used without an
    /// owner (one-shot use); `None` when the pool is full.
    pub fn next_candidate(&mut self, pool: &Pool) -> Option<SubnetIndex> {
        match allocate(pool, &mut self.held, Timestamp(0)) {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }

    /// This process created `claim` (a candidate's, or a repaired one): it
    /// counts as held, and as its workload's, until the cache shows it.
    pub fn won(&mut self, claim: SubnetClaim, now: Instant) {
        let name = claim.name_any();
        if self.claims.contains_key(&name) {
            self.unreserve(&name);
            return;
        }
        let Some(index) = subnet_of(&name).and_then(|s| self.pool.index_of(s).ok()) else {
            return;
        };
        let reservation = self.reserved.entry(name.clone()).or_insert_with(|| {
            self.held.hold(index);
            Reservation {
                index,
                claim: None,
                at: now,
            }
        });
        reservation.claim = Some(claim);
        reservation.at = now;
        self.made.push_back((now, name));
    }

    /// Drops the reservation of `name`, if any (its create failed, or its
    /// claim was released).
    pub fn unreserve(&mut self, name: &str) {
        if let Some(r) = self.reserved.remove(name) {
            self.held.release(r.index);
        }
    }

    /// This process's created claims that the cache does not show yet and
    /// `keep` selects.
    pub fn reserved_claims(
        &self,
        now: Instant,
        keep: impl Fn(&SubnetClaim) -> bool,
    ) -> Vec<SubnetClaim> {
        self.reserved
            .values()
            .filter(|r| now.saturating_duration_since(r.at) < RESERVATION_TTL)
            .filter_map(|r| r.claim.as_ref())
            .filter(|c| keep(c))
            .cloned()
            .collect()
    }

    /// Drops reservations older than [`RESERVATION_TTL`].
    fn expire(&mut self, now: Instant) {
        while let Some((at, name)) = self.made.front() {
            if now.saturating_duration_since(*at) < RESERVATION_TTL {
                break;
            }
            if self.reserved.get(name).is_some_and(|r| r.at == *at) {
                let name = name.clone();
                self.unreserve(&name);
            }
            self.made.pop_front();
        }
    }
}

/// Whether `subnet` overlaps `pool` without being one of its subnets.
fn overlaps_foreign(pool: &Pool, subnet: Ipv6Net) -> bool {
    let cidr = pool.cidr();
    pool.index_of(subnet).is_err() && (cidr.contains(&subnet) || subnet.contains(&cidr))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    use crate::testing::example_pool as pool;

    fn is_dns_subdomain(s: &str) -> bool {
        s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    #[test]
    fn names_are_valid_and_reversible() {
        let cases = [
            ("fd00:1234:5678::/96", "fd00-1234-5678---96"),
            ("fd00:1234:5678::1:0:0/96", "fd00-1234-5678--1-0-0-96"),
            (
                "fd00:1234:5678:ffff:ffff:ffff:ffff:0/112",
                "fd00-1234-5678-ffff-ffff-ffff-ffff-0-112",
            ),
            ("::/64", "0---64"),
            ("0:0:0:1::/64", "0-0-0-1---64"),
            ("2001:db8::/64", "2001-db8---64"),
        ];
        for (subnet, name) in cases {
            let net: Ipv6Net = subnet.parse().unwrap();
            assert_eq!(claim_name(net), name, "{subnet}");
            assert!(is_dns_subdomain(name), "{name}");
            assert_eq!(subnet_of(name), Some(net), "{name}");
        }
        let p = pool();
        for i in [0u128, 1, 2, 65535, 65536, 1 << 40, p.capacity() - 1] {
            let s = p.subnet(i);
            let n = claim_name(s);
            assert!(is_dns_subdomain(&n), "{n}");
            assert_eq!(subnet_of(&n), Some(s));
        }
    }

    proptest::proptest! {
        #[test]
        fn every_subnet_has_one_valid_name_that_decodes_back(addr: u128, len in 0u8..=128) {
            let net = Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc();
            let name = claim_name(net);
            proptest::prop_assert!(is_dns_subdomain(&name), "{}", name);
            proptest::prop_assert_eq!(subnet_of(&name), Some(net));
        }

        #[test]
        fn arbitrary_names_decode_only_to_their_own_encoding(name in "[0-9a-f-]{1,45}") {
            if let Some(net) = subnet_of(&name) {
                proptest::prop_assert_eq!(claim_name(net), name);
            }
        }
    }

    #[test]
    fn only_canonical_names_decode() {
        for bad in [
            "fd00-1234-5678-0---96", // not canonical (zero group spelled out)
            "fd00-1234-5678---096",
            "fd00-1234-5678--1-96", // host bits set for /96
            "fd00-1234-5678---129",
            "FD00-1234-5678---96",
            "hello",
            "-96",
            "fd00-1234-5678---",
        ] {
            assert_eq!(subnet_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn candidates_follow_the_core_rule_lowest_gap_then_high_water() {
        let p = pool();
        let names: Vec<String> = [0u128, 1, 3, 5]
            .iter()
            .map(|&i| claim_name(p.subnet(i)))
            .collect();
        let mut l = ClaimLedger::from_names(&p, names.iter().map(String::as_str));
        assert_eq!(l.len(), 4);
        let now = Instant::now();
        assert_eq!(l.reserve_next(now), Some(2));
        assert_eq!(l.reserve_next(now), Some(4));
        assert_eq!(l.reserve_next(now), Some(6));
        // 6 was lost to another claimant (409): still held, 7 is next.
        assert_eq!(l.reserve_next(now), Some(7));
        // A deleted claim below the others is found again.
        l.claim_gone(&names[1]);
        assert_eq!(l.reserve_next(now), Some(1));
    }

    fn claim(subnet: Ipv6Net) -> SubnetClaim {
        SubnetClaim::new(
            &claim_name(subnet),
            crate::crd::SubnetClaimSpec {
                subnet: subnet.to_string(),
                tenant: "acme".into(),
                namespace: "tenant-acme".into(),
                deployment: "web".into(),
                workload_uid: "u".into(),
                released_at: None,
            },
        )
    }

    #[test]
    fn a_reservation_lasts_until_the_cache_shows_its_claim_or_it_expires() {
        let p = pool();
        let mut l = ClaimLedger::new(p.clone());
        let t0 = Instant::now();
        let all = |l: &ClaimLedger, at| l.reserved_claims(at, |_| true).len();
        // Created by this process: its workload's, and held.
        assert_eq!(l.reserve_next(t0), Some(0));
        l.won(claim(p.subnet(0)), t0);
        assert_eq!(all(&l, t0), 1);
        // The cache shows it: the claim holds it now, the reservation goes.
        l.claim_seen(&claim_name(p.subnet(0)));
        assert_eq!((all(&l, t0), l.len()), (0, 1));
        // Released before the cache saw it: free at once.
        assert_eq!(l.reserve_next(t0), Some(1));
        l.won(claim(p.subnet(1)), t0);
        l.unreserve(&claim_name(p.subnet(1)));
        assert_eq!(l.len(), 1);
        // A lost candidate is held until the TTL, then free again.
        assert_eq!(l.reserve_next(t0), Some(1));
        let later = t0 + RESERVATION_TTL;
        assert_eq!(l.reserve_next(later), Some(1));
        assert_eq!(all(&l, later), 0);
        // Won after the cache already showed it: nothing is reserved.
        l.claim_seen(&claim_name(p.subnet(5)));
        l.won(claim(p.subnet(5)), later);
        assert_eq!(all(&l, later), 0);
    }

    #[test]
    fn claims_of_another_prefix_length_inside_the_pool_are_found() {
        let p = pool();
        let old_96 = claim_name(p.subnet(0));
        let beside: Ipv6Net = "fd00:9999::/96".parse().unwrap();
        let wide: Ipv6Net = "fd00:1234::/32".parse().unwrap();
        let names = [
            old_96.clone(),
            claim_name("fd00:1234:5678::1:0/112".parse().unwrap()),
            claim_name(beside),
            claim_name(wide),
        ];
        let found = ClaimLedger::foreign_overlaps(&p, names.iter().map(String::as_str));
        assert_eq!(
            found,
            ["fd00:1234:5678::1:0/112".parse::<Ipv6Net>().unwrap(), wide]
        );
    }

    #[test]
    fn foreign_names_are_ignored_and_a_full_pool_says_none() {
        let small = Pool::new(
            "fd00::/64".parse().unwrap(),
            "65".parse().unwrap(),
            Duration::ZERO,
        )
        .unwrap();
        let mut l = ClaimLedger::from_names(&small, ["not-a-subnet", "2001-db8---96"]);
        assert!(l.is_empty() && l.foreign().is_empty());
        assert_eq!(l.next_candidate(&small), Some(0));
        assert_eq!(l.next_candidate(&small), Some(1));
        assert_eq!(l.next_candidate(&small), None);
    }
}
