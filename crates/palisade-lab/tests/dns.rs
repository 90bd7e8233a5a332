//! The lab's DNS stand-in, asked by a real resolver: BIND's `dig`
//! (Debian bind9-dnsutils), which parses the replies with its own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_lab::dns::{Names, serve, serve_tcp};
use std::net::SocketAddr;
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `dig @addr -p port name type`, with its whole answer printed one record
/// a line (`+noall +answer`) and the header's status (`+comments`).
fn dig(server: SocketAddr, name: &str, kind: &str) -> Option<String> {
    dig_with(server, &[name, kind])
}

/// `dig @addr -p port ARGS...` as [`dig`] runs it; stdout and stderr.
fn dig_with(server: SocketAddr, args: &[&str]) -> Option<String> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args)
        .args(["+tries=1", "+time=2", "+noall", "+answer", "+comments"])
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("failed to run dig: {e}"),
        Ok(out) => {
            assert!(out.status.success(), "dig failed: {out:?}");
            let said = String::from_utf8(out.stdout).unwrap();
            Some(said + &String::from_utf8(out.stderr).unwrap())
        }
    }
}

/// The answer records dig printed: (name, type, address).
fn records(said: &str) -> Vec<(String, String, String)> {
    said.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[3].to_string(), f[4].to_string())
        })
        .collect()
}

fn status(said: &str) -> &str {
    let at = said.find("status: ").expect("dig printed a header") + "status: ".len();
    said[at..].split(',').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_a_and_aaaa_answers_and_nxdomain_for_unknown_names() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = socket.local_addr().unwrap();
    let fqdn = "api.tenant-a.svc.cluster.local";
    let addrs = vec!["10.96.0.7".parse().unwrap(), "fd00:10::7".parse().unwrap()];
    let names = Names::from([
        (fqdn.to_string(), addrs.clone()),
        ("api".to_string(), addrs),
    ]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(socket, names, async {
        let _ = stopped.await;
    }));

    let asked = tokio::task::spawn_blocking(move || {
        // `None`: dig is not installed.
        let a = dig(server, fqdn, "A")?;
        Some([
            a,
            dig(server, "API.tenant-a.svc.cluster.local.", "AAAA").unwrap(),
            dig(server, "api", "AAAA").unwrap(),
            dig(server, "db.tenant-a.svc.cluster.local", "A").unwrap(),
            dig(server, "api", "MX").unwrap(),
        ])
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let Some([a, aaaa, short, unknown, mx]) = asked else {
        eprintln!("SKIPPED: dig is not installed (apt-get install bind9-dnsutils)");
        assert!(!in_ci(), "CI=true but dig is missing");
        return;
    };
    assert_eq!(status(&a), "NOERROR", "{a}");
    let fq = format!("{fqdn}.");
    assert_eq!(records(&a), [(fq.clone(), "A".into(), "10.96.0.7".into())]);
    // The answer keeps the case the question was asked in (RFC 4343 §4.1).
    assert_eq!(
        records(&aaaa),
        [(
            "API.tenant-a.svc.cluster.local.".into(),
            "AAAA".into(),
            "fd00:10::7".into()
        )]
    );
    assert_eq!(
        records(&short),
        [("api.".into(), "AAAA".into(), "fd00:10::7".into())]
    );
    assert_eq!(status(&unknown), "NXDOMAIN", "{unknown}");
    assert!(records(&unknown).is_empty());
    assert_eq!(status(&mx), "NOERROR", "{mx}");
    assert!(records(&mx).is_empty());
}

/// A UDP socket and a TCP listener on the same loopback port, as a DNS
/// server listens (RFC 7766 §5).
async fn both_transports() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// The flags of dig's header line (`;; flags: qr aa; QUERY: 1, ...`).
fn flags(said: &str) -> Vec<&str> {
    let at = said.find("flags: ").expect("dig printed flags") + "flags: ".len();
    said[at..]
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .collect()
}

/// A Service with 64 pods has no complete UDP answer (64 AAAA records are
/// more than dig's 1232-byte EDNS buffer): the UDP answer says TC, dig
/// retries over TCP on its own ("Truncated, retrying in TCP mode") and gets
/// every address, and `dig +tcp` gets them directly, also two queries on
/// one connection (`+keepopen`, RFC 7766 §6.2.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_udp_answer_is_retried_over_tcp_and_complete_there() {
    let (udp, tcp) = both_transports().await;
    let server = udp.local_addr().unwrap();
    let many: Vec<std::net::IpAddr> = (1..=64u16)
        .map(|i| std::net::IpAddr::from([0xfd00, 0x10, 0, 0, 0, 0, 0, i]))
        .collect();
    let big = "big.tenant-a.svc.cluster.local";
    let names = Names::from([
        (big.to_string(), many.clone()),
        ("api".to_string(), vec!["10.96.0.7".parse().unwrap()]),
    ]);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let udp_task = tokio::spawn(serve(udp, names.clone(), until(stopped.clone())));
    let tcp_task = tokio::spawn(serve_tcp(tcp, names, until(stopped)));

    let asked = tokio::task::spawn_blocking(move || {
        let ignored = dig_with(server, &[big, "AAAA", "+ignore"])?;
        Some([
            ignored,
            dig_with(server, &[big, "AAAA"]).unwrap(),
            dig_with(server, &[big, "AAAA", "+tcp"]).unwrap(),
            dig_with(server, &["+tcp", "+keepopen", big, "AAAA", "api", "A"]).unwrap(),
        ])
    })
    .await
    .unwrap();
    stop.send(true).unwrap();
    udp_task.await.unwrap().unwrap();
    tcp_task.await.unwrap().unwrap();

    let Some([ignored, retried, tcp, keepopen]) = asked else {
        eprintln!("SKIPPED: dig is not installed (apt-get install bind9-dnsutils)");
        assert!(!in_ci(), "CI=true but dig is missing");
        return;
    };
    // Over UDP, without retrying: TC set and no records (RFC 1035 §4.2.1).
    assert!(flags(&ignored).contains(&"tc"), "{ignored}");
    assert!(records(&ignored).is_empty(), "{ignored}");
    let want: Vec<String> = many.iter().map(ToString::to_string).collect();
    let got = |said: &str| -> Vec<String> {
        let mut v: Vec<String> = records(said)
            .into_iter()
            .filter(|r| r.1 == "AAAA")
            .map(|r| r.2)
            .collect();
        v.sort_by_key(|a| a.parse::<std::net::Ipv6Addr>().unwrap());
        v
    };
    assert!(retried.contains("retrying in TCP mode"), "{retried}");
    assert_eq!(got(&retried), want, "{retried}");
    assert!(!flags(&retried).contains(&"tc"), "{retried}");
    assert_eq!(got(&tcp), want, "{tcp}");
    assert_eq!(got(&keepopen), want, "{keepopen}");
    assert!(
        records(&keepopen).contains(&("api.".into(), "A".into(), "10.96.0.7".into())),
        "{keepopen}"
    );
}
