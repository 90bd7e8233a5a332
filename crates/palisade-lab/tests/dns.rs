//! The lab's DNS stand-in, asked by a real resolver: BIND's `dig`
//! (Debian bind9-dnsutils), which parses the replies with its own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_lab::dns::{Names, serve};
use std::net::SocketAddr;
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `dig @addr -p port name type`, with its whole answer printed one record
/// a line (`+noall +answer`) and the header's status (`+comments`).
fn dig(server: SocketAddr, name: &str, kind: &str) -> Option<String> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args([
            name,
            kind,
            "+tries=1",
            "+time=2",
            "+noall",
            "+answer",
            "+comments",
        ])
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("failed to run dig: {e}"),
        Ok(out) => {
            assert!(out.status.success(), "dig failed: {out:?}");
            Some(String::from_utf8(out.stdout).unwrap())
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
