//! Allocator figures for the foundation issue: ns per allocate/release at
//! scale, and bytes per live allocation at 1,000,000 live subnets.
//!
//! Run: `cargo bench -p palisade-core --bench allocator`.

// A benchmark should stop loudly if its setup is wrong.
#![allow(clippy::expect_used)]

use palisade_core::allocator::{SubnetAllocator, Timestamp};
use palisade_core::{Pool, SubnetLen};
use std::time::{Duration, Instant};

fn allocator() -> SubnetAllocator {
    let pool = Pool::new(
        Pool::ula([0x12, 0x34, 0x56, 0x78, 0x9a]),
        SubnetLen::default(),
        Duration::ZERO,
    )
    .expect("a /48 holds /96s");
    SubnetAllocator::new(pool)
}

fn main() {
    let now = Timestamp(0);
    let live_target = 1_000_000;

    // 1. Fill to 1M live subnets.
    let mut a = allocator();
    let start = Instant::now();
    let mut live = Vec::with_capacity(live_target);
    for _ in 0..live_target {
        live.push(a.allocate(now).expect("pool has room"));
    }
    let fill = start.elapsed();
    let bytes = a.heap_bytes() + std::mem::size_of::<SubnetAllocator>();
    println!(
        "fill: {live_target} allocations in {:.1} ms ({:.1} ns/op)",
        fill.as_secs_f64() * 1e3,
        fill.as_nanos() as f64 / live_target as f64
    );
    println!(
        "memory at {live_target} live: {bytes} bytes = {:.6} bytes per live allocation (target < 64)",
        bytes as f64 / live_target as f64
    );

    // 2. 10M mixed operations at 1M live: release a pseudo-random live
    // subnet, then allocate (which recycles it, lowest first). Victims are
    // drawn by index so the harness itself does not miss the cache on an
    // 18 MB vector of subnets.
    drop(live);
    let pool = a.pool().clone();
    let ops = 10_000_000u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    for _ in 0..ops / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let victim = pool.subnet(u128::from(x % live_target as u64));
        a.release(victim, now).expect("subnet is live");
        let got = a.allocate(now).expect("a recycled subnet exists");
        debug_assert_eq!(got, victim);
    }
    let mixed = start.elapsed();
    println!(
        "mixed: {ops} allocate/release operations at {live_target} live in {:.1} ms = {:.1} ns/op (target < 100)",
        mixed.as_secs_f64() * 1e3,
        mixed.as_nanos() as f64 / ops as f64
    );
    assert_eq!(a.usage(now).allocated, live_target as u128);
    let bytes = a.heap_bytes() + std::mem::size_of::<SubnetAllocator>();
    println!(
        "memory after mixed ops: {:.3} bytes per live allocation",
        bytes as f64 / live_target as f64
    );

    // 3. Peer: the obvious BTreeSet<u128> free list + HashSet<u128> live set.
    let start = Instant::now();
    let mut free = std::collections::BTreeSet::<u128>::new();
    let mut used = std::collections::HashSet::<u128>::with_capacity(live_target);
    let mut next = 0u128;
    for _ in 0..live_target {
        used.insert(next);
        next += 1;
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..ops / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let victim = u128::from(x % live_target as u64);
        if used.remove(&victim) {
            free.insert(victim);
        }
        let got = free.pop_first().unwrap_or_else(|| {
            next += 1;
            next - 1
        });
        used.insert(got);
    }
    let peer = start.elapsed();
    println!(
        "peer (BTreeSet free list + HashSet live set): {:.1} ns/op; ours is {:.2}x faster",
        peer.as_nanos() as f64 / ops as f64,
        peer.as_secs_f64() / mixed.as_secs_f64()
    );
}
