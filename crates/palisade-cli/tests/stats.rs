//! `palisade stats` on a pool of more than 2^64 subnets: counts are u128,
//! and every output format prints them exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::Env;

/// 2^(120-48) subnets of /120 in a /48, computed outside Palisade
/// (python3 -c 'print(2**72)').
const CAPACITY: &str = "4722366482869645213696";

#[test]
fn stats_prints_a_capacity_beyond_u64_in_every_format() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:77::/48", "--prefix-len", "120"])
        .ok();
    let table = env.run(&["stats"]).ok();
    assert!(table.contains("capacity:"), "{table}");
    assert!(table.contains(CAPACITY), "{table}");
    let json = env.run(&["-o", "json", "stats"]).ok();
    assert!(
        json.contains(&format!("\"capacity\": {CAPACITY},")),
        "{json}"
    );
    let yaml = env.run(&["-o", "yaml", "stats"]).ok();
    assert!(yaml.contains(&format!("capacity: {CAPACITY}\n")), "{yaml}");
}
