//! Shared by the dashboard tests: the real `palisade` binary as servers, a
//! loopback echo origin that records who connected, a real egress proxy and
//! a tiny HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// Runs `palisade --state STATE args...`, panicking on failure.
pub fn palisade(state: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "palisade {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A child process killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `palisade args...` (stderr to `log`) and waits for its first
/// stdout line, which carries the URL it serves on.
pub fn serve(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null());
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "palisade {args:?} printed no URL: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    Server { child, url, log }
}

/// An HTTP origin on 127.0.0.1 answering every request with the address
/// the connection came from, and remembering it.
pub struct Echo {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<IpAddr>>>,
}

impl Echo {
    pub fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let peer = s.peer_addr().unwrap().ip();
                record.lock().unwrap().push(peer);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = peer.to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Echo { addr, seen }
    }

    pub fn seen(&self) -> Vec<IpAddr> {
        self.seen.lock().unwrap().clone()
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET/POST over a fresh connection; (status, body).
pub fn http(method: &str, url: &str) -> (u16, String) {
    http_body(method, url, "")
}

/// `method url` with a JSON `body` (none if empty); (status, body).
pub fn http_body(method: &str, url: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let kind = if body.is_empty() {
        String::new()
    } else {
        "content-type: application/json\r\n".to_owned()
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{kind}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real `palisade proxy` whose tenant `acme` is whoever connects from
/// 127.0.0.1, leaving from `egress` and allowed to reach `port` on loopback.
pub struct Proxy {
    pub server: Server,
    pub listen: String,
    pub admin: String,
}

pub fn start_proxy(dir: &Path, egress: &str, port: u16) -> Proxy {
    // Port 0 for both listeners; the proxy logs the addresses it bound.
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nreload_poll: 0s\ntenants:\n\
             - name: acme\n  sources: [{{ prefix: 127.0.0.1/32, deployment: egress-check }}]\n  \
             egress: {{ ipv4: {egress} }}\n  allow_ports: [{port}]\n  allow_cidrs: [127.0.0.0/8]\n"
        ),
    )
    .unwrap();
    let log = dir.join("proxy.log");
    let child = Command::new(BIN)
        .args(["proxy", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server {
        child,
        url: String::new(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (listen, admin) = loop {
        let text = std::fs::read_to_string(&server.log).unwrap_or_default();
        let line = text.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "proxy listening").then(|| {
                (
                    v["listen"].as_str().unwrap_or_default().to_owned(),
                    v["admin"].as_str().unwrap_or_default().to_owned(),
                )
            })
        });
        if let Some(addrs) = line {
            break addrs;
        }
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "palisade proxy exited: {text}"
        );
        assert!(
            Instant::now() < deadline,
            "palisade proxy did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !listen.ends_with(":0") && !admin.ends_with(":0"),
        "{listen} {admin}"
    );
    server.url = format!("http://{listen}");
    wait_listening(&listen);
    wait_listening(&admin);
    Proxy {
        server,
        listen,
        admin,
    }
}

/// Whether to skip (printing why) or, under CI=true, fail.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: this test must run)");
    }
    eprintln!("SKIPPED: {why}");
}
