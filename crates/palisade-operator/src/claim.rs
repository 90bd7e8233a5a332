//! Subnet claims: one cluster-scoped object per allocated subnet.
//!
//! Kubernetes allocates Service IPs the same way (`IPAddress` objects named
//! by the address): the API server refuses a second object of one name, so
//! creating the claim *is* the allocation, atomically, across replicas and
//! concurrent reconciles. No lock, no leader needed for correctness.
//!
//! Which subnet to try is the core's rule ([`palisade_core::allocator`]):
//! the lowest free index below the high-water mark (a recycled subnet),
//! else the next never-used one. [`ClaimLedger`] presents the existing
//! claims as a [`Ledger`]; a name conflict (409) means someone else just
//! took the candidate, which is then marked used and the next one tried.
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

use ipnet::Ipv6Net;
use palisade_core::Pool;
use palisade_core::allocator::{Ledger, SubnetIndex, Timestamp, allocate};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::Ipv6Addr;

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

/// The claimed indices of a pool as a core [`Ledger`]: what is below the
/// high-water mark and not claimed is "recycled". Subnets are handed back
/// by deleting their claim, so nothing is ever quarantined here.
#[derive(Debug, Clone, Default)]
pub struct ClaimLedger {
    used: BTreeSet<SubnetIndex>,
    /// The lowest index that may be free; everything below is used.
    floor: SubnetIndex,
}

impl ClaimLedger {
    /// A ledger over the claims named `names` (names outside `pool` are
    /// ignored: they belong to another pool configuration).
    pub fn from_names<'a>(pool: &Pool, names: impl IntoIterator<Item = &'a str>) -> Self {
        let used = names
            .into_iter()
            .filter_map(subnet_of)
            .filter_map(|s| pool.index_of(s).ok())
            .collect();
        Self { used, floor: 0 }
    }

    /// Claims that overlap `pool` without being one of its subnets: left
    /// by an earlier configuration (another prefix length, or a pool that
    /// contains or is contained in this one). [`ClaimLedger::from_names`]
    /// cannot see them, so allocating while any exists could hand out a
    /// subnet inside a live one; the operator refuses instead.
    pub fn foreign_overlaps<'a>(
        pool: &Pool,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Ipv6Net> {
        let cidr = pool.cidr();
        names
            .into_iter()
            .filter_map(subnet_of)
            .filter(|s| pool.index_of(*s).is_err())
            .filter(|s| cidr.contains(s) || s.contains(&cidr))
            .collect()
    }

    /// Marks `index` used (someone else created its claim first).
    pub fn mark_used(&mut self, index: SubnetIndex) {
        self.used.insert(index);
    }

    /// How many subnets are claimed.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether nothing is claimed.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// The next subnet to try, per the core rule; `None` when the pool is
    /// full. The returned index is marked used.
    pub fn next_candidate(&mut self, pool: &Pool) -> Option<SubnetIndex> {
        match allocate(pool, self, Timestamp(0)) {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }
}

impl Ledger for ClaimLedger {
    type Error = Infallible;

    fn promote_due(&mut self, _now: Timestamp) -> Result<(), Infallible> {
        Ok(())
    }

    fn pop_lowest_recycled(&mut self) -> Result<Option<SubnetIndex>, Infallible> {
        let high = self.used.last().map_or(0, |m| m + 1);
        let mut i = self.floor;
        // Walk the used set from the floor: the first gap is the lowest
        // free index. Each call advances the floor, so a run of conflicts
        // costs O(claims) in total, not per candidate.
        for &u in self.used.range(self.floor..) {
            if u != i {
                break;
            }
            i += 1;
        }
        self.floor = i;
        if i < high {
            self.used.insert(i);
            Ok(Some(i))
        } else {
            Ok(None)
        }
    }

    fn high_water(&mut self) -> Result<SubnetIndex, Infallible> {
        Ok(self.used.last().map_or(0, |m| m + 1))
    }

    fn set_high_water(&mut self, next: SubnetIndex) -> Result<(), Infallible> {
        if next > 0 {
            self.used.insert(next - 1);
        }
        Ok(())
    }

    fn recycle(
        &mut self,
        index: SubnetIndex,
        _: Timestamp,
        _: Timestamp,
    ) -> Result<(), Infallible> {
        self.used.remove(&index);
        self.floor = self.floor.min(index);
        Ok(())
    }
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
        assert_eq!(l.next_candidate(&p), Some(2));
        assert_eq!(l.next_candidate(&p), Some(4));
        assert_eq!(l.next_candidate(&p), Some(6));
        assert_eq!(l.next_candidate(&p), Some(7));
        // A conflict on 8 (someone else created it): 9 is next.
        l.mark_used(8);
        assert_eq!(l.next_candidate(&p), Some(9));
        // A deleted claim below the floor is found again.
        l.recycle(1, Timestamp(0), Timestamp(0)).unwrap();
        assert_eq!(l.next_candidate(&p), Some(1));
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
        assert!(l.is_empty());
        assert_eq!(l.next_candidate(&small), Some(0));
        assert_eq!(l.next_candidate(&small), Some(1));
        assert_eq!(l.next_candidate(&small), None);
    }
}
