//! Fuzz the request-target / host / literal-IP parsing and the address check.
//!
//! Run: `cargo +nightly fuzz run target_parse` from `crates/palisade-proxy`, or
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run target_parse` with a stable toolchain.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use palisade_proxy::target::{AddressGuard, Host, parse_authority};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for default_port in [None, Some(80)] {
        let Ok(t) = parse_authority(s, default_port) else { continue };
        // What we print, we parse back to the same target.
        let again = parse_authority(&t.to_string(), None).expect("display form reparses");
        assert_eq!(again, t);
        assert_ne!(t.port, 0);
        match &t.host {
            Host::Ip(ip) => {
                let guard = AddressGuard::new(&[], &[], &[], &[]);
                let canonical = ip.to_canonical();
                // A mapped address is judged exactly like the IPv4 address it is.
                assert_eq!(
                    guard.check(SocketAddr::new(*ip, t.port)).is_ok(),
                    guard.check(SocketAddr::new(canonical, t.port)).is_ok()
                );
            }
            Host::Name(n) => {
                assert!(!n.is_empty() && n.len() <= 253);
                assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'));
            }
        }
    }
});
