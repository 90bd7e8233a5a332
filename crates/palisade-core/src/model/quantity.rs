//! CPU and memory amounts in the units Kubernetes quotas use.
//!
//! Stored as integers (millicores, bytes) so comparisons and sums are exact,
//! and printed back in the canonical Kubernetes form so rendered YAML is
//! stable whatever spelling the user typed.

use super::ModelError;
use std::fmt;
use std::str::FromStr;

/// CPU in millicores (`"2"` = 2000, `"500m"` = 500, `"0.5"` = 500).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Cpu(u64);

impl Cpu {
    /// A CPU amount from millicores.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }
    /// The amount in millicores.
    pub const fn millis(self) -> u64 {
        self.0
    }
}

impl FromStr for Cpu {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = || ModelError::InvalidQuantity {
            kind: "cpu",
            value: s.to_owned(),
            reason: "expected cores (\"2\", \"0.5\") or millicores (\"500m\")",
        };
        let millis = if let Some(m) = s.strip_suffix('m') {
            parse_digits(m).ok_or_else(fail)?
        } else {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            if frac.len() > 3 || (whole.is_empty() && frac.is_empty()) {
                return Err(fail());
            }
            let whole = if whole.is_empty() {
                0
            } else {
                parse_digits(whole).ok_or_else(fail)?
            };
            let frac_millis = if frac.is_empty() {
                0
            } else {
                parse_digits(frac).ok_or_else(fail)? * 10u64.pow(3 - frac.len() as u32)
            };
            whole
                .checked_mul(1000)
                .and_then(|w| w.checked_add(frac_millis))
                .ok_or_else(fail)?
        };
        if millis == 0 {
            return Err(ModelError::InvalidQuantity {
                kind: "cpu",
                value: s.to_owned(),
                reason: "must be greater than zero",
            });
        }
        Ok(Self(millis))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// Memory in bytes (`"8Gi"`, `"512Mi"`, `"1G"`, `"1000"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Memory(u64);

const BINARY: [(&str, u64); 6] = [
    ("Ei", 1 << 60),
    ("Pi", 1 << 50),
    ("Ti", 1 << 40),
    ("Gi", 1 << 30),
    ("Mi", 1 << 20),
    ("Ki", 1 << 10),
];
const DECIMAL: [(&str, u64); 6] = [
    ("E", 1_000_000_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("T", 1_000_000_000_000),
    ("G", 1_000_000_000),
    ("M", 1_000_000),
    ("k", 1_000),
];

impl Memory {
    /// A memory amount from bytes.
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }
    /// The amount in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Memory {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ModelError::InvalidQuantity {
            kind: "memory",
            value: s.to_owned(),
            reason,
        };
        let syntax = "expected a whole number of bytes with an optional suffix (Ki, Mi, Gi, Ti, k, M, G, T), e.g. 8Gi";
        let (digits, unit) = BINARY
            .iter()
            .chain(DECIMAL.iter())
            .find_map(|(suffix, unit)| s.strip_suffix(suffix).map(|d| (d, *unit)))
            .unwrap_or((s, 1));
        let n = parse_digits(digits).ok_or_else(|| fail(syntax))?;
        let bytes = n.checked_mul(unit).ok_or_else(|| fail("is too large"))?;
        if bytes == 0 {
            return Err(fail("must be greater than zero"));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, unit) in BINARY.iter().chain(DECIMAL.iter()) {
            if self.0.is_multiple_of(*unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Parses ASCII digits only (no sign, no spaces), refusing overflow.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

macro_rules! string_conversions {
    ($ty:ident) => {
        impl TryFrom<String> for $ty {
            type Error = ModelError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.to_string()
            }
        }
    };
}
string_conversions!(Cpu);
string_conversions!(Memory);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_round_trips_to_canonical_form() {
        for (input, millis, shown) in [
            ("2", 2000, "2"),
            ("500m", 500, "500m"),
            ("0.5", 500, "500m"),
            (".25", 250, "250m"),
            ("1.5", 1500, "1500m"),
            ("4000m", 4000, "4"),
        ] {
            let c: Cpu = input.parse().unwrap();
            assert_eq!(
                (c.millis(), c.to_string().as_str()),
                (millis, shown),
                "{input}"
            );
        }
        for bad in ["", "0", "-1", "1.2345", "2 cores", "m", "1e3"] {
            assert!(bad.parse::<Cpu>().is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_round_trips_to_canonical_form() {
        for (input, bytes, shown) in [
            ("8Gi", 8 << 30, "8Gi"),
            ("512Mi", 512 << 20, "512Mi"),
            ("1024Mi", 1 << 30, "1Gi"),
            ("1G", 1_000_000_000, "1G"),
            ("1500", 1500, "1500"),
        ] {
            let m: Memory = input.parse().unwrap();
            assert_eq!(
                (m.bytes(), m.to_string().as_str()),
                (bytes, shown),
                "{input}"
            );
        }
        for bad in ["", "0Gi", "8GB", "8 Gi", "-1", "99999999999Ei"] {
            assert!(bad.parse::<Memory>().is_err(), "{bad}");
        }
    }
}
