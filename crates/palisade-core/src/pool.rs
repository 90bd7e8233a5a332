//! The IPv6 pool that deployment subnets are carved from.
//!
//! A pool is a CIDR and the prefix length of the subnets cut from it. The
//! `index`-th subnet is simply `pool.network + index << (128 - len)`, so a
//! subnet and its index convert both ways in O(1) and "lowest index" is
//! "lowest address".

use ipnet::{IpNet, Ipv6Net};
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::Duration;

/// Why a pool or a subnet was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Not a CIDR at all.
    #[error("invalid pool CIDR {input:?}: expected an IPv6 prefix such as fd00:1234:5678::/48")]
    InvalidCidr {
        /// The rejected input.
        input: String,
    },
    /// An IPv4 pool: deployments get IPv6 subnets.
    #[error(
        "IPv4 pool {input} is not supported: every deployment gets an IPv6 subnet; \
         use an IPv6 prefix such as fd00:1234:5678::/48, or omit --pool to generate a ULA"
    )]
    Ipv4NotSupported {
        /// The rejected input.
        input: String,
    },
    /// Bits set past the prefix length, which usually means a typo.
    #[error("pool CIDR {input} has host bits set; did you mean {suggestion}?")]
    HostBitsSet {
        /// The rejected input.
        input: String,
        /// The same prefix with host bits cleared.
        suggestion: Ipv6Net,
    },
    /// A subnet prefix length outside /64../120.
    #[error("invalid subnet prefix length {0}: must be between /64 and /120")]
    SubnetLenOutOfRange(String),
    /// Subnets larger than the pool itself.
    #[error(
        "subnet prefix length /{subnet_len} is shorter than the pool {pool}: subnets must fit inside the pool"
    )]
    SubnetLargerThanPool {
        /// The pool.
        pool: Ipv6Net,
        /// The requested subnet length.
        subnet_len: u8,
    },
    /// A subnet that this pool could not have handed out.
    #[error("subnet {subnet} is not a /{subnet_len} subnet of pool {pool}")]
    NotInPool {
        /// The subnet.
        subnet: Ipv6Net,
        /// The pool.
        pool: Ipv6Net,
        /// The pool's subnet length.
        subnet_len: u8,
    },
}

/// The prefix length of deployment subnets, /64 to /120 (default /96).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub struct SubnetLen(u8);

impl SubnetLen {
    /// The shortest prefix (largest subnet) accepted.
    pub const MIN: u8 = 64;
    /// The longest prefix (smallest subnet) accepted.
    pub const MAX: u8 = 120;

    /// The prefix length.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl Default for SubnetLen {
    /// /96: 2^32 addresses per deployment, as in the seed.
    fn default() -> Self {
        Self(96)
    }
}

impl TryFrom<u8> for SubnetLen {
    type Error = PoolError;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        if (Self::MIN..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(PoolError::SubnetLenOutOfRange(n.to_string()))
        }
    }
}

impl FromStr for SubnetLen {
    type Err = PoolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u8 = s
            .trim_start_matches('/')
            .parse()
            .map_err(|_| PoolError::SubnetLenOutOfRange(s.to_owned()))?;
        n.try_into()
    }
}

impl From<SubnetLen> for u8 {
    fn from(l: SubnetLen) -> u8 {
        l.0
    }
}

impl fmt::Display for SubnetLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// A pool CIDR carved into equal subnets, with the quarantine that released
/// subnets wait out before reuse.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    cidr: Ipv6Net,
    subnet_len: SubnetLen,
    /// How long a released subnet stays out of circulation (whole seconds).
    reuse_after: Duration,
}

impl Pool {
    /// A pool; fails if subnets of `subnet_len` do not fit in `cidr`.
    pub fn new(
        cidr: Ipv6Net,
        subnet_len: SubnetLen,
        reuse_after: Duration,
    ) -> Result<Self, PoolError> {
        if subnet_len.get() < cidr.prefix_len() {
            return Err(PoolError::SubnetLargerThanPool {
                pool: cidr,
                subnet_len: subnet_len.get(),
            });
        }
        if cidr.network() != cidr.addr() {
            return Err(PoolError::HostBitsSet {
                input: cidr.to_string(),
                suggestion: cidr.trunc(),
            });
        }
        Ok(Self {
            cidr,
            subnet_len,
            reuse_after: Duration::from_secs(reuse_after.as_secs()),
        })
    }

    /// Parses a pool CIDR as typed by a user, refusing IPv4 and host bits.
    pub fn parse_cidr(input: &str) -> Result<Ipv6Net, PoolError> {
        match input.trim().parse::<IpNet>() {
            Ok(IpNet::V6(net)) if net.network() == net.addr() => Ok(net),
            Ok(IpNet::V6(net)) => Err(PoolError::HostBitsSet {
                input: input.to_owned(),
                suggestion: net.trunc(),
            }),
            Ok(IpNet::V4(_)) => Err(PoolError::Ipv4NotSupported {
                input: input.to_owned(),
            }),
            Err(_) => Err(PoolError::InvalidCidr {
                input: input.to_owned(),
            }),
        }
    }

    /// An RFC 4193 unique local /48 (`fd` + a 40-bit global ID). The caller
    /// supplies the random ID, keeping this crate free of entropy sources.
    pub fn ula(global_id: [u8; 5]) -> Ipv6Net {
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        octets[1..6].copy_from_slice(&global_id);
        // A /48 built from a valid address is always a valid prefix.
        Ipv6Net::new(Ipv6Addr::from(octets), 48).unwrap_or_default()
    }

    /// The pool's CIDR.
    pub fn cidr(&self) -> Ipv6Net {
        self.cidr
    }

    /// The prefix length of its subnets.
    pub fn subnet_len(&self) -> SubnetLen {
        self.subnet_len
    }

    /// The quarantine of released subnets.
    pub fn reuse_after(&self) -> Duration {
        self.reuse_after
    }

    /// How many subnets the pool holds: 2^(subnet_len - pool_len), exactly.
    pub fn capacity(&self) -> u128 {
        1u128 << (self.subnet_len.get() - self.cidr.prefix_len())
    }

    /// The `index`-th subnet. `index` must be below [`Pool::capacity`].
    pub fn subnet(&self, index: u128) -> Ipv6Net {
        debug_assert!(index < self.capacity());
        let shift = 128 - u32::from(self.subnet_len.get());
        let base = u128::from(self.cidr.network());
        let addr = Ipv6Addr::from(base | (index << shift));
        // The length is within 64..=120, always a valid IPv6 prefix length.
        Ipv6Net::new(addr, self.subnet_len.get()).unwrap_or_default()
    }

    /// The index of a subnet this pool could have handed out.
    pub fn index_of(&self, subnet: Ipv6Net) -> Result<u128, PoolError> {
        let not_in_pool = || PoolError::NotInPool {
            subnet,
            pool: self.cidr,
            subnet_len: self.subnet_len.get(),
        };
        if subnet.prefix_len() != self.subnet_len.get()
            || subnet.network() != subnet.addr()
            || !self.cidr.contains(&subnet)
        {
            return Err(not_in_pool());
        }
        let shift = 128 - u32::from(self.subnet_len.get());
        Ok((u128::from(subnet.network()) - u128::from(self.cidr.network())) >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, len: u8) -> Pool {
        Pool::new(
            cidr.parse().unwrap(),
            len.try_into().unwrap(),
            Duration::ZERO,
        )
        .unwrap()
    }

    #[test]
    fn capacity_is_exact() {
        assert_eq!(pool("fd00::/48", 96).capacity(), 281_474_976_710_656);
        assert_eq!(pool("fd00::/64", 64).capacity(), 1);
        assert_eq!(pool("::/0", 120).capacity(), 1 << 120);
    }

    #[test]
    fn subnets_and_indices_convert_both_ways() {
        let p = pool("fd00:1:2::/48", 96);
        assert_eq!(p.subnet(0).to_string(), "fd00:1:2::/96");
        assert_eq!(p.subnet(1).to_string(), "fd00:1:2::1:0:0/96");
        let last = p.capacity() - 1;
        assert_eq!(p.subnet(last).to_string(), "fd00:1:2:ffff:ffff:ffff::/96");
        for i in [0, 1, 77, last] {
            assert_eq!(p.index_of(p.subnet(i)).unwrap(), i);
        }
        for bad in ["fd00:1:3::/96", "fd00:1:2::1/96", "fd00:1:2::/97"] {
            assert!(p.index_of(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn pool_input_errors_say_what_to_type() {
        let e = Pool::parse_cidr("10.0.0.0/8").unwrap_err().to_string();
        assert!(e.contains("IPv4 pool 10.0.0.0/8 is not supported"), "{e}");
        let e = Pool::parse_cidr("fd00::1/48").unwrap_err().to_string();
        assert!(e.contains("did you mean fd00::/48"), "{e}");
        assert!(Pool::parse_cidr("banana").is_err());
        assert!("63".parse::<SubnetLen>().is_err());
        assert!("121".parse::<SubnetLen>().is_err());
        assert_eq!("/112".parse::<SubnetLen>().unwrap().get(), 112);
        let e = Pool::new(
            "fd00::/80".parse().unwrap(),
            SubnetLen::try_from(64).unwrap(),
            Duration::ZERO,
        );
        assert!(e.unwrap_err().to_string().contains("shorter than the pool"));
    }

    #[test]
    fn ula_is_a_unique_local_48() {
        let net = Pool::ula([0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(net.to_string(), "fd12:3456:789a::/48");
    }
}
