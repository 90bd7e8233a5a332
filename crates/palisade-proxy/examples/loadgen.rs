//! Load generator for `bench/run.sh` (loopback only). Not part of the test suite.
//!
//! ```text
//! loadgen hold ADDR                         accept and hold connections (tunnel sink)
//! loadgen source PORT                       on each connection, send bytes until the peer closes
//! loadgen bulk (--proxy ADDR|--direct) TARGET BYTES     read BYTES through a CONNECT tunnel (or directly)
//! loadgen setup --proxy ADDR TARGET COUNT CONCURRENCY   CONNECT, read 200, close; COUNT times
//! loadgen idle --proxy ADDR TARGET COUNT PID            open COUNT idle tunnels, report PID's RSS growth
//! loadgen relay ADDR                        reference CONNECT relay (see below)
//! ```
//! Every mode but `hold`, `source` and `relay` prints one `key=value ...` line.
//!
//! `relay` is the bulk figure's yardstick, not a proxy: no policy, no event
//! loop, one blocking thread per direction moving bytes with `splice(2)`
//! through a 1 MiB pipe. It is about the least work any user-space relay can
//! do per byte, so its throughput bounds what a proxy can reach on the
//! machine the benchmark runs on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, SpliceFFlags, fcntl, splice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn tunnel(proxy: SocketAddr, target: &str) -> std::io::Result<TcpStream> {
    tokio::time::timeout(Duration::from_secs(10), tunnel_inner(proxy, target))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("CONNECT timed out")))
}

async fn tunnel_inner(proxy: SocketAddr, target: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::Error::other("proxy closed during CONNECT"));
        }
        head.push(b[0]);
        if head.len() > 8192 {
            return Err(std::io::Error::other("CONNECT answer too long"));
        }
    }
    if !(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")) {
        return Err(std::io::Error::other(format!(
            "CONNECT refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        )));
    }
    Ok(s)
}

/// One direction of the reference relay: socket -> pipe -> socket until EOF.
fn splice_one_way(from: &std::net::TcpStream, to: &std::net::TcpStream) {
    let (r, w) = nix::unistd::pipe().unwrap();
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(1 << 20));
    loop {
        let n = match splice(from, None, &w, None, 1 << 20, SpliceFFlags::SPLICE_F_MOVE) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut left = n;
        while left > 0 {
            match splice(&r, None, to, None, left, SpliceFFlags::SPLICE_F_MOVE) {
                Ok(0) | Err(_) => return,
                Ok(m) => left -= m,
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Serve one CONNECT: read the head, dial the target, answer 200, relay both ways.
fn reference_relay(client: std::net::TcpStream) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    let mut c = &client;
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b)? == 0 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let target = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let upstream = std::net::TcpStream::connect(target)?;
    c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || splice_one_way(&c2, &u2));
    splice_one_way(&upstream, &client);
    let _ = up.join();
    Ok(())
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    match a(0).as_str() {
        "hold" => {
            let l = TcpListener::bind(a(1)).await.unwrap();
            let mut held = Vec::new();
            loop {
                if let Ok((s, _)) = l.accept().await {
                    held.push(s);
                }
            }
        }
        "source" => {
            let l = TcpListener::bind(format!("127.0.0.1:{}", a(1)))
                .await
                .unwrap();
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let buf = vec![0x5a; 256 * 1024];
                    while s.write_all(&buf).await.is_ok() {}
                });
            }
        }
        "relay" => {
            let l = std::net::TcpListener::bind(a(1)).unwrap();
            for client in l.incoming().flatten() {
                std::thread::spawn(move || reference_relay(client));
            }
        }
        "bulk" => {
            let target = a(2);
            let bytes: u64 = a(3).parse().unwrap();
            let mut s = if a(1) == "--direct" {
                TcpStream::connect(&target).await.unwrap()
            } else {
                tunnel(
                    a(1).trim_start_matches("--proxy=").parse().unwrap(),
                    &target,
                )
                .await
                .unwrap()
            };
            let mut buf = vec![0u8; 256 * 1024];
            let start = Instant::now();
            let mut got = 0u64;
            while got < bytes {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "bytes={got} secs={secs:.3} mib_per_s={:.0}",
                got as f64 / secs / 1048576.0
            );
        }
        "setup" => {
            let proxy: SocketAddr = a(1).trim_start_matches("--proxy=").parse().unwrap();
            let target = Arc::new(a(2));
            let count: usize = a(3).parse().unwrap();
            let conc: usize = a(4).parse().unwrap();
            let next = Arc::new(AtomicUsize::new(0));
            let errors = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..conc {
                let (next, errors, target) = (next.clone(), errors.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        if tunnel(proxy, &target).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "tunnels={count} errors={} secs={secs:.3} per_s={:.0}",
                errors.load(Ordering::Relaxed),
                count as f64 / secs
            );
        }
        "idle" => {
            let proxy: SocketAddr = a(1).trim_start_matches("--proxy=").parse().unwrap();
            let target = Arc::new(a(2));
            let count: usize = a(3).parse().unwrap();
            let pid = a(4);
            let before = rss_kib(&pid);
            let sem = Arc::new(tokio::sync::Semaphore::new(200));
            let mut tasks = Vec::with_capacity(count);
            for _ in 0..count {
                let (sem, target) = (sem.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    let _p = sem.acquire().await.unwrap();
                    tunnel(proxy, &target).await
                }));
            }
            let mut open = Vec::with_capacity(count);
            let mut errors = 0;
            let mut first_error = String::new();
            for t in tasks {
                match t.await.unwrap() {
                    Ok(s) => open.push(s),
                    Err(e) => {
                        if errors == 0 {
                            first_error = e.to_string();
                        }
                        errors += 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = rss_kib(&pid);
            let per = (after.saturating_sub(before) as f64 * 1024.0) / open.len().max(1) as f64;
            println!(
                "tunnels={} errors={errors} rss_before_kib={before} rss_after_kib={after} bytes_per_tunnel={per:.0} first_error={:?}",
                open.len(),
                first_error
            );
        }
        _ => {
            eprintln!("see the module docs for usage");
            std::process::exit(2);
        }
    }
}
