//! Turning a [`Plan`] into namespaces, links, addresses, one nftables table
//! and processes — and taking them away again.
//!
//! This is the only module that touches the host. It shells out to `ip`
//! (batched: one `ip -batch` for the router, one per pod) and `nft -f`
//! (one atomic transaction per change), and remembers what it started in
//! `<lab dir>/state.json`. That file is a convenience, not the source of
//! truth for cleanup: `down` finds everything by the `pl-<lab id>-` prefix,
//! so it also cleans up after a crash, and is idempotent.

use crate::plan::{
    self, GatewayPlan, HTTP_PORT, InfraNames, LabOptions, PROXY_ADDR, Plan, PodPlan,
    ROUTER_LINK_LOCAL, Runtime, TenantEgress, veth_name,
};
use crate::serve::{ServeSpec, Workload};
use crate::{LabError, Result};
use ipnet::Ipv6Net;
use palisade_core::Snapshot;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The longest workload spec passed inline to `__serve`; a longer one goes
/// through a file (one argument may hold at most 128 KiB, execve(2)).
const INLINE_SPEC_MAX: usize = 64 * 1024;

/// Progress of a long operation, for a progress bar or plain lines.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A new phase with this many steps.
    Phase {
        /// What is being done.
        name: String,
        /// How many steps.
        total: u64,
    },
    /// One step done.
    Tick(String),
    /// A note worth printing (a runtime fallback, a skipped item).
    Note(String),
}

/// A planned object with the process that runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Running<T> {
    /// What was planned.
    #[serde(flatten)]
    pub spec: T,
    /// Its process (in its namespace).
    pub pid: u32,
}

/// What a running lab consists of: written by `up`/`sync`, read by
/// `status`, `verify`, `sync` and `down`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabState {
    /// The lab id (`pl-<id>-` prefixes its namespaces).
    pub lab_id: String,
    /// When `up` ran (RFC 3339).
    pub started_at: String,
    /// When `up` or `sync` last changed it (RFC 3339).
    pub synced_at: String,
    /// The runtime pods were asked to use.
    pub runtime: Runtime,
    /// Fixed namespaces.
    pub infra: InfraNames,
    /// The subnet pool.
    pub pool: Ipv6Net,
    /// The egress proxy's port.
    pub proxy_port: u16,
    /// Pods.
    pub pods: Vec<Running<PodPlan>>,
    /// Gateways.
    pub gateways: Vec<Running<GatewayPlan>>,
    /// Tenant egress.
    pub egress: Vec<TenantEgress>,
    /// The egress proxy's process.
    pub proxy_pid: u32,
    /// The internet echo origin's process.
    pub echo_pid: u32,
    /// The other stand-ins' processes (metadata, API server, DNS): (namespace, pid).
    #[serde(default)]
    pub stand_ins: Vec<(String, u32)>,
    /// What the lab could not model in the rendered objects it runs.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Where each policy endpoint lives (for tooling that inspects the table).
    pub endpoints: Vec<(palisade_core::policy::Endpoint, Vec<Ipv6Net>)>,
}

/// Pods and gateways just started.
type Started = (Vec<Running<PodPlan>>, Vec<Running<GatewayPlan>>);

/// One lab, kept in a directory (next to the state database).
#[derive(Debug, Clone)]
pub struct Lab {
    /// `<state db dir>/lab` or as chosen.
    pub dir: PathBuf,
    /// The `palisade` binary that runs workloads and probes.
    pub exe: PathBuf,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Runs a command, returning stdout, or its stderr as the error.
/// The `ip` script that gives an endpoint namespace (a pod, a gateway, the
/// internet) its one address on `eth0` and its route via the router.
fn endpoint_script(addr: std::net::Ipv6Addr) -> String {
    format!(
        "link set lo up\nlink set eth0 up\naddr add {addr}/128 dev eth0 nodad\n\
         route add default via {ROUTER_LINK_LOCAL} dev eth0\n"
    )
}

/// Runs an `ip -6 -batch` script in namespace `ns`.
fn ip6_batch(ns: &str, script: &str) -> Result<String> {
    run("ip", &["-6", "-n", ns, "-batch", "-"], Some(script))
}

pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let line = format!("{program} {}", args.join(" "));
    tracing::debug!(command = %line, stdin_lines = stdin.map_or(0, |s| s.lines().count()), "run");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(LabError::io(format!("cannot run `{line}`")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(LabError::io(format!("cannot write to `{line}`")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(LabError::io(format!("cannot wait for `{line}`")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        return Err(LabError::Command {
            command: truncate(&line, 120),
            stderr: truncate(stderr, 2000),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// Checks that this host can run a lab: Linux, root, `ip` and `nft`.
pub fn check_host() -> Result<()> {
    if !cfg!(target_os = "linux") {
        return Err(LabError::Unsupported("Linux".into()));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::Unsupported(
            "root (network namespaces and nftables); try sudo".into(),
        ));
    }
    for tool in ["ip", "nft"] {
        if run(tool, &["-V"], None).is_err() {
            return Err(LabError::Unsupported(format!(
                "`{tool}` (Debian: apt-get install {})",
                if tool == "ip" { "iproute2" } else { "nftables" }
            )));
        }
    }
    Ok(())
}

/// Network namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// Whether `runsc` can run a process inside namespace `netns`.
/// `runsc do` keeps its sandbox state in a temporary directory that a
/// killed sandbox never removes; `tmp` puts it where `down` cleans up.
pub fn runsc_works(netns: &str, tmp: &Path) -> bool {
    let _ = std::fs::create_dir_all(tmp);
    let child = Command::new("ip")
        .args(["netns", "exec", netns, "runsc"])
        .env("TMPDIR", tmp)
        .args(runsc_flags())
        .args(["do", "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// gVisor flags: rootless, no cgroups (`ip netns exec` remounts /sys, which
/// hides the cgroup hierarchy), and the pod namespace's own network stack.
fn runsc_flags() -> [&'static str; 3] {
    ["--rootless", "--ignore-cgroups", "--network=host"]
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Whether process `pid`'s network namespace has a TCP socket listening on
/// every one of `ports`.
fn listening(pid: u32, ports: &[u16]) -> bool {
    let mut found = BTreeSet::new();
    for file in ["tcp6", "tcp"] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            return false;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 3
                && fields[3] == "0A"
                && let Some(port) = fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                found.insert(port);
            }
        }
    }
    ports.iter().all(|p| found.contains(p))
}

impl Lab {
    /// The lab for the state database at `state_db`: `<its dir>/lab`.
    pub fn for_state(state_db: &Path, exe: PathBuf) -> Self {
        let dir = state_db
            .parent()
            .map_or_else(|| PathBuf::from("lab"), |p| p.join("lab"));
        Self { dir, exe }
    }

    /// The lab's id.
    pub fn lab_id(&self) -> String {
        plan::lab_id_for(&self.dir)
    }

    /// `pl-<id>-`.
    pub fn prefix(&self) -> String {
        format!("{}{}-", plan::NAME_PREFIX, self.lab_id())
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Where `runsc do` keeps its sandboxes' state.
    fn runsc_dir(&self) -> PathBuf {
        self.dir.join("runsc")
    }

    fn log_path(&self, netns: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{netns}.log"))
    }

    /// The running lab's state, or `None` if no lab runs.
    pub fn load(&self) -> Result<Option<LabState>> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LabError::io(format!("cannot read {}", path.display()))(e)),
        };
        let state: LabState =
            serde_json::from_str(&text).map_err(LabError::json(format!("{}", path.display())))?;
        Ok(Some(state))
    }

    /// The running lab's state, or [`LabError::NotRunning`].
    pub fn require(&self) -> Result<LabState> {
        self.load()?.ok_or(LabError::NotRunning)
    }

    fn save(&self, state: &LabState) -> Result<()> {
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).map_err(LabError::json("lab state"))?;
        std::fs::write(&tmp, text)
            .map_err(LabError::io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path)
            .map_err(LabError::io(format!("cannot replace {}", path.display())))
    }

    /// Writes `text` to `<lab dir>/<name>` atomically and returns the path.
    fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text)
            .map_err(LabError::io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path)
            .map_err(LabError::io(format!("cannot replace {}", path.display())))?;
        Ok(path)
    }

    /// Starts a lab for `snapshot`. `runtime: None` uses gVisor when it
    /// works on this host, else plain processes.
    ///
    /// A failure half-way takes down what was created, so a failed `up`
    /// leaves nothing behind.
    pub fn up(
        &self,
        snapshot: &Snapshot,
        objects: &[Value],
        runtime: Option<Runtime>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<LabState> {
        check_host()?;
        if self.load()?.is_some() && !namespaces_with_prefix(&self.prefix())?.is_empty() {
            return Err(LabError::AlreadyRunning);
        }
        let result = self.create(snapshot, objects, runtime, progress);
        if result.is_err() {
            let _ = self.down(&|_| {});
        }
        result
    }

    fn create(
        &self,
        snapshot: &Snapshot,
        objects: &[Value],
        runtime: Option<Runtime>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<LabState> {
        // Leftovers of a crashed run.
        self.down(progress)?;
        std::fs::create_dir_all(self.dir.join("logs")).map_err(LabError::io(format!(
            "cannot create {}",
            self.dir.display()
        )))?;
        // Plan first (cheap, may refuse) with the requested runtime; the
        // runtime is settled once the router namespace exists.
        let mut options = LabOptions::for_dir(&self.dir, runtime.unwrap_or(Runtime::Plain));
        let draft = plan::plan(snapshot, objects, &options)?;
        progress(Progress::Phase {
            name: "infrastructure".into(),
            total: 4,
        });
        self.add_router(&draft.infra)?;
        progress(Progress::Tick("router".into()));
        options.runtime = self.resolve_runtime(&draft.infra, runtime, progress);
        let plan = plan::plan(snapshot, objects, &options)?;
        self.add_infra(&plan)?;
        progress(Progress::Tick("proxy and stand-in namespaces".into()));
        self.apply_ruleset(&plan)?;
        progress(Progress::Tick("nftables".into()));
        let (proxy_pid, echoes) = self.start_infra(&plan)?;
        progress(Progress::Tick("egress proxy and stand-ins".into()));
        let now = now_rfc3339();
        let mut state = LabState {
            lab_id: plan.options.lab_id.clone(),
            started_at: now.clone(),
            synced_at: now,
            runtime: options.runtime,
            infra: plan.infra.clone(),
            pool: plan.pool,
            proxy_port: plan.options.policy.proxy_port.get(),
            pods: Vec::new(),
            gateways: Vec::new(),
            egress: plan.egress.clone(),
            proxy_pid,
            echo_pid: echoes.first().map_or(0, |e| e.1),
            stand_ins: echoes.into_iter().skip(1).collect(),
            notes: plan.notes.clone(),
            endpoints: plan.endpoints.clone().into_iter().collect(),
        };
        // Save early so that a failure below still leaves `down` a record.
        self.save(&state)?;
        let (pods, gateways) = self.add_endpoints(&plan, &plan.pods, &plan.gateways, progress)?;
        state.pods = pods;
        state.gateways = gateways;
        self.save(&state)?;
        Ok(state)
    }

    /// The node: a namespace that forwards IPv6.
    fn add_router(&self, infra: &InfraNames) -> Result<()> {
        run("ip", &["netns", "add", &infra.router], None)?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &infra.router,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.default.forwarding=1",
            ],
            None,
        )?;
        Ok(())
    }

    /// The requested runtime, or gVisor when it works here.
    fn resolve_runtime(
        &self,
        infra: &InfraNames,
        runtime: Option<Runtime>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Runtime {
        if let Some(r) = runtime {
            return r;
        }
        if runsc_works(&infra.router, &self.runsc_dir()) {
            return Runtime::Runsc;
        }
        progress(Progress::Note(
            "runsc does not work here; pods run as plain processes".into(),
        ));
        Runtime::Plain
    }

    /// The proxy's namespace (inside and outside links, every tenant's
    /// egress address) and one namespace per echo stand-in.
    fn add_infra(&self, plan: &Plan) -> Result<()> {
        let infra = &plan.infra;
        let echoes = infra.echoes();
        let mut add = format!("netns add {}\n", infra.proxy);
        for (ns, _, _) in &echoes {
            let _ = writeln!(add, "netns add {ns}");
        }
        run("ip", &["-batch", "-"], Some(&add))?;
        let mut router = format!(
            "link add proxy-in type veth peer name in netns {p}\n\
             link add proxy-out type veth peer name out netns {p}\n",
            p = infra.proxy
        );
        for dev in ["proxy-in", "proxy-out"] {
            let _ = writeln!(
                router,
                "link set {dev} up\naddr add {ROUTER_LINK_LOCAL}/64 dev {dev} nodad"
            );
        }
        let _ = writeln!(router, "route add {PROXY_ADDR}/128 dev proxy-in");
        for (ns, addr, _) in &echoes {
            let _ = writeln!(router, "{}", attach_script(ns, &veth_name(ns), *addr));
        }
        // Tenants may share an egress address: one route, one address.
        let egress_ips: BTreeSet<_> = plan.egress.iter().map(|e| e.ip).collect();
        for ip in &egress_ips {
            let _ = writeln!(router, "route add {ip}/128 dev proxy-out");
        }
        ip6_batch(&infra.router, &router)?;
        let mut proxy = format!(
            "link set lo up\nlink set in up\nlink set out up\n\
             addr add {PROXY_ADDR}/128 dev in nodad\n\
             route add default via {ROUTER_LINK_LOCAL} dev out\n\
             route add {} via {ROUTER_LINK_LOCAL} dev in\n",
            plan.pool
        );
        for ip in &egress_ips {
            let _ = writeln!(proxy, "addr add {ip}/128 dev out nodad");
        }
        ip6_batch(&infra.proxy, &proxy)?;
        for (ns, addr, _) in &echoes {
            ip6_batch(ns, &endpoint_script(*addr))?;
        }
        Ok(())
    }

    /// Starts one echo stand-in; the DNS one also answers DNS queries.
    fn start_echo(&self, plan: &Plan, ns: &str, listen: SocketAddr) -> Result<u32> {
        let workload = if ns == plan.infra.dns {
            let text =
                serde_json::to_string(&plan.dns_names).map_err(LabError::json("DNS names"))?;
            Workload::Dns {
                names_file: self.write_file("dns-names.json", &text)?,
            }
        } else {
            Workload::Echo
        };
        self.spawn(ns, Runtime::Plain, &workload, &[listen], &[])
    }

    /// Restarts the DNS stand-in so it answers for the synced pods.
    fn restart_dns(&self, plan: &Plan, state: &mut LabState) -> Result<()> {
        let dns = &plan.infra.dns;
        let Some(slot) = state.stand_ins.iter_mut().find(|(ns, _)| ns == dns) else {
            return Ok(());
        };
        kill_namespace_processes(dns)?;
        let listen = SocketAddr::new(IpAddr::V6(plan::DNS_ADDR), plan::DNS_PORT);
        slot.1 = self.start_echo(plan, dns, listen)?;
        self.wait_ready(dns, slot.1, &[plan::DNS_PORT], Duration::from_secs(10))
    }

    /// Starts the proxy and the echo stand-ins and waits until they listen.
    /// Returns the proxy's pid and (namespace, pid) of each echo, in
    /// [`InfraNames::echoes`] order.
    fn start_infra(&self, plan: &Plan) -> Result<(u32, Vec<(String, u32)>)> {
        let proxy_pid = self.start_proxy(plan)?;
        let mut echoes = Vec::new();
        for (ns, addr, port) in plan.infra.echoes() {
            let pid = self.start_echo(plan, ns, SocketAddr::new(IpAddr::V6(addr), port))?;
            echoes.push((ns.to_owned(), pid, port));
        }
        for (ns, pid, port) in &echoes {
            self.wait_ready(ns, *pid, &[*port], Duration::from_secs(10))?;
        }
        self.wait_ready(
            "the egress proxy",
            proxy_pid,
            &[plan.options.policy.proxy_port.get()],
            Duration::from_secs(10),
        )?;
        Ok((
            proxy_pid,
            echoes.into_iter().map(|(ns, pid, _)| (ns, pid)).collect(),
        ))
    }

    /// Brings a running lab in line with `snapshot`: pods and gateways that
    /// went away are removed, new ones are added, changed gateways restart,
    /// the proxy reloads its config, and the nftables table is replaced in
    /// one transaction. Returns (pods added, pods removed).
    pub fn sync(
        &self,
        snapshot: &Snapshot,
        objects: &[Value],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(usize, usize, LabState)> {
        check_host()?;
        let mut state = self.require()?;
        let options = LabOptions::for_dir(&self.dir, state.runtime);
        let plan = plan::plan(snapshot, objects, &options)?;
        let diff = Diff::of(&mut state, &plan);
        progress(Progress::Phase {
            name: "sync".into(),
            total: (diff.gone.len() + diff.gone_gw.len()) as u64,
        });
        self.remove_gone(&state.infra.router, &diff, progress)?;
        update_egress_addresses(&state, &plan)?;
        // New policy first for what stays, then the new endpoints under it.
        self.apply_ruleset(&plan)?;
        self.write_file("proxy.yaml", &proxy_yaml(&plan)?)?;
        if pid_alive(state.proxy_pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(state.proxy_pid as i32),
                nix::sys::signal::Signal::SIGHUP,
            );
        }
        let (added, removed) = (diff.new_pods.len(), diff.gone.len());
        state.pods = diff.keep;
        state.gateways = diff.keep_gw;
        state.egress = plan.egress.clone();
        state.endpoints = plan.endpoints.clone().into_iter().collect();
        state.notes = plan.notes.clone();
        self.restart_dns(&plan, &mut state)?;
        state.synced_at = now_rfc3339();
        self.save(&state)?;
        let (pods, gateways) = self.add_endpoints(&plan, &diff.new_pods, &diff.new_gw, progress)?;
        state.pods.extend(pods);
        state.gateways.extend(gateways);
        state.pods.sort_by(|a, b| a.spec.netns.cmp(&b.spec.netns));
        state
            .gateways
            .sort_by(|a, b| a.spec.netns.cmp(&b.spec.netns));
        self.save(&state)?;
        Ok((added, removed, state))
    }

    /// Takes the pods and gateways that went away down: the router ends
    /// first (a deleted namespace is torn down asynchronously, and a
    /// recycled address must be routable at once), then their namespaces.
    fn remove_gone(
        &self,
        router_ns: &str,
        diff: &Diff,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<()> {
        let gone = || {
            let pods = diff.gone.iter().map(|r| (&r.spec.veth, &r.spec.netns));
            pods.chain(diff.gone_gw.iter().map(|r| (&r.spec.veth, &r.spec.netns)))
        };
        let unlink: String = gone()
            .map(|(veth, _)| format!("link del {veth}\n"))
            .collect();
        if !unlink.is_empty() {
            // Best effort: a link already gone is what we want.
            let _ = run(
                "ip",
                &["-force", "-n", router_ns, "-batch", "-"],
                Some(&unlink),
            );
        }
        for (_, ns) in gone() {
            remove_namespace(ns)?;
            progress(Progress::Tick(format!("removed {ns}")));
        }
        Ok(())
    }

    /// Removes every namespace (and so every link, address and nftables
    /// table) and every process of this lab, found by name prefix. Returns
    /// the namespaces removed. Idempotent.
    pub fn down(&self, progress: &(dyn Fn(Progress) + Sync)) -> Result<Vec<String>> {
        let state = self.load().ok().flatten();
        let found = namespaces_with_prefix(&self.prefix())?;
        progress(Progress::Phase {
            name: "down".into(),
            total: found.len() as u64,
        });
        for ns in &found {
            remove_namespace(ns)?;
            progress(Progress::Tick(ns.clone()));
        }
        // Processes whose namespace was already gone (a half-finished down).
        if let Some(s) = &state {
            let pids = s
                .pods
                .iter()
                .map(|p| p.pid)
                .chain(s.gateways.iter().map(|g| g.pid))
                .chain([s.proxy_pid, s.echo_pid])
                .chain(s.stand_ins.iter().map(|(_, pid)| *pid));
            let ours: Vec<u32> = pids.filter(|&pid| is_ours(pid, &self.exe)).collect();
            for &pid in &ours {
                kill(pid);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while ours.iter().any(|&pid| pid_alive(pid)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(self.state_path());
        let _ = std::fs::remove_dir_all(self.runsc_dir());
        Ok(found)
    }

    /// Whether the running lab matches `snapshot` (its ruleset and pods), so
    /// `verify` can say "run `lab sync`" instead of reporting stale state.
    pub fn in_sync(
        &self,
        state: &LabState,
        snapshot: &Snapshot,
        objects: &[Value],
    ) -> Result<bool> {
        let options = LabOptions::for_dir(&self.dir, state.runtime);
        let plan = plan::plan(snapshot, objects, &options)?;
        let running = std::fs::read_to_string(self.dir.join("ruleset.nft")).unwrap_or_default();
        let pods = |p: &PodPlan| (p.netns.clone(), p.addr, p.ports.clone());
        let want: BTreeSet<_> = plan.pods.iter().map(pods).collect();
        let have: BTreeSet<_> = state.pods.iter().map(|r| pods(&r.spec)).collect();
        Ok(running == plan.ruleset && want == have)
    }

    fn apply_ruleset(&self, plan: &Plan) -> Result<()> {
        self.load_ruleset(&plan.infra.router, &plan.ruleset)
    }

    /// Writes `ruleset` to `<lab dir>/ruleset.nft` and loads it into the
    /// router's namespace in one `nft -f` transaction.
    fn load_ruleset(&self, router: &str, ruleset: &str) -> Result<()> {
        let path = self.write_file("ruleset.nft", ruleset)?;
        let path = path.to_string_lossy().into_owned();
        run("ip", &["netns", "exec", router, "nft", "-f", &path], None)?;
        Ok(())
    }

    /// A lab of bare pods (plain processes) behind `ruleset`, with the
    /// internet echo origin answering on ports 80 and 443 as the world:
    /// what `lab verify --manifests` runs. `udp[i]` are the UDP ports pod
    /// `i` answers on besides its TCP ports. No proxy, gateways or other
    /// stand-ins, and no `state.json`: the caller measures and takes it
    /// down again ([`Lab::down`] finds it by prefix).
    pub fn up_bare(
        &self,
        infra: &InfraNames,
        ruleset: &str,
        pods: &[PodPlan],
        udp: &[Vec<u16>],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<()> {
        check_host()?;
        self.down(&|_| {})?;
        std::fs::create_dir_all(self.dir.join("logs")).map_err(LabError::io(format!(
            "cannot create {}",
            self.dir.display()
        )))?;
        self.add_router(infra)?;
        let echo_veth = veth_name(&infra.internet);
        let mut attach: Vec<Attach<'_>> =
            vec![(infra.internet.as_str(), echo_veth.as_str(), plan::ECHO_ADDR)];
        attach.extend(
            pods.iter()
                .map(|p| (p.netns.as_str(), p.veth.as_str(), p.addr)),
        );
        self.attach_namespaces(&infra.router, &attach, progress)?;
        self.load_ruleset(&infra.router, ruleset)?;
        let ports = [HTTP_PORT, 443];
        let listen = ports.map(|p| SocketAddr::new(IpAddr::V6(plan::ECHO_ADDR), p));
        let echo = self.spawn(
            &infra.internet,
            Runtime::Plain,
            &Workload::Echo,
            &listen,
            &[],
        )?;
        progress(Progress::Phase {
            name: "workloads".into(),
            total: pods.len() as u64,
        });
        let mut started = Vec::new();
        for (i, p) in pods.iter().enumerate() {
            let spec = ServeSpec {
                workload: pod_workload(p),
                listen: pod_listen(p),
                udp: udp
                    .get(i)
                    .into_iter()
                    .flatten()
                    .map(|port| SocketAddr::new(IpAddr::V6(p.addr), *port))
                    .collect(),
            };
            let pid = self.spawn_spec(&p.netns, p.runtime, &spec, &[])?;
            started.push((p.clone(), pid));
        }
        self.wait_pods(started, &[], progress)?;
        self.wait_ready("the internet echo", echo, &ports, Duration::from_secs(10))
    }

    fn start_proxy(&self, plan: &Plan) -> Result<u32> {
        let config = self.write_file("proxy.yaml", &proxy_yaml(plan)?)?;
        let log = self.open_log(&plan.infra.proxy)?;
        let exe = self.exe.to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &plan.infra.proxy,
                &exe,
                "proxy",
                "--config",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(LabError::io("log file"))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(LabError::io("cannot start the egress proxy"))?;
        Ok(child.id())
    }

    fn open_log(&self, netns: &str) -> Result<std::fs::File> {
        let path = self.log_path(netns);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(LabError::io(format!("cannot open {}", path.display())))
    }

    /// `spec` as `__serve`'s argument: inline, or `@FILE` beside the log
    /// when it would pass [`INLINE_SPEC_MAX`].
    fn spec_arg(&self, netns: &str, spec: &ServeSpec) -> Result<String> {
        let json = serde_json::to_string(spec).map_err(LabError::json("workload spec"))?;
        if json.len() <= INLINE_SPEC_MAX {
            return Ok(json);
        }
        let path = self.log_path(netns).with_extension("spec.json");
        std::fs::write(&path, json)
            .map_err(LabError::io(format!("cannot write {}", path.display())))?;
        Ok(format!("@{}", path.display()))
    }

    /// Starts `workload` in `netns`, listening on TCP at `listen`.
    fn spawn(
        &self,
        netns: &str,
        runtime: Runtime,
        workload: &Workload,
        listen: &[SocketAddr],
        env: &[(&str, String)],
    ) -> Result<u32> {
        let spec = ServeSpec {
            workload: workload.clone(),
            listen: listen.to_vec(),
            udp: Vec::new(),
        };
        self.spawn_spec(netns, runtime, &spec, env)
    }

    /// Starts `spec` in `netns`.
    fn spawn_spec(
        &self,
        netns: &str,
        runtime: Runtime,
        spec: &ServeSpec,
        env: &[(&str, String)],
    ) -> Result<u32> {
        let spec = self.spec_arg(netns, spec)?;
        let log = self.open_log(netns)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]);
        if runtime == Runtime::Runsc {
            std::fs::create_dir_all(self.runsc_dir())
                .map_err(LabError::io("cannot create the runsc directory"))?;
            cmd.arg("runsc")
                .args(runsc_flags())
                .arg("do")
                .env("TMPDIR", self.runsc_dir());
        }
        cmd.arg(&self.exe)
            .args(["lab", "__serve", &spec])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(LabError::io("log file"))?)
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().map_err(LabError::io(format!(
            "cannot start the workload in {netns}"
        )))?;
        tracing::info!(netns, %runtime, pid = child.id(), "started workload");
        Ok(child.id())
    }

    fn wait_ready(&self, what: &str, pid: u32, ports: &[u16], limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if listening(pid, ports) {
                return Ok(());
            }
            if !pid_alive(pid) || Instant::now() > deadline {
                return Err(LabError::NotReady(what.to_string(), limit));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates the namespaces, links and addresses of `pods` and `gateways`
    /// and starts their processes.
    fn add_endpoints(
        &self,
        plan: &Plan,
        pods: &[PodPlan],
        gateways: &[GatewayPlan],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Started> {
        if pods.is_empty() && gateways.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let attach: Vec<Attach<'_>> = pods
            .iter()
            .map(|p| (p.netns.as_str(), p.veth.as_str(), p.addr))
            .chain(
                gateways
                    .iter()
                    .map(|g| (g.netns.as_str(), g.veth.as_str(), g.addr)),
            )
            .collect();
        progress(Progress::Phase {
            name: "namespaces".into(),
            total: attach.len() as u64,
        });
        self.attach_namespaces(&plan.infra.router, &attach, progress)?;
        progress(Progress::Phase {
            name: "workloads".into(),
            total: attach.len() as u64,
        });
        let env = proxy_env(plan);
        let mut started: Vec<(PodPlan, u32)> = Vec::new();
        for p in pods {
            let pid = self.spawn(&p.netns, p.runtime, &pod_workload(p), &pod_listen(p), &env)?;
            started.push((p.clone(), pid));
        }
        let mut gw_running = Vec::new();
        for g in gateways {
            let listen = [SocketAddr::new(IpAddr::V6(g.addr), HTTP_PORT)];
            let pid = self.spawn(&g.netns, Runtime::Plain, &gateway_workload(g), &listen, &[])?;
            gw_running.push((g.clone(), pid));
        }
        let running = self.wait_pods(started, &env, progress)?;
        let mut gws = Vec::new();
        for (g, pid) in gw_running {
            self.wait_ready(&g.display, pid, &[HTTP_PORT], Duration::from_secs(10))?;
            progress(Progress::Tick(g.display.clone()));
            gws.push(Running { spec: g, pid });
        }
        Ok((running, gws))
    }

    /// Creates the namespaces of `attach`, links each to the router with a
    /// /128 route, and gives each its address (in parallel: `ip` is slow
    /// to start).
    fn attach_namespaces(
        &self,
        router_ns: &str,
        attach: &[Attach<'_>],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<()> {
        // Re-adding after a failed attempt must not trip over leftovers.
        let existing: BTreeSet<String> = namespaces_with_prefix(&self.prefix())?
            .into_iter()
            .collect();
        for (ns, _, _) in attach {
            if existing.contains(*ns) {
                remove_namespace(ns)?;
            }
        }
        let mut add = String::new();
        for (ns, _, _) in attach {
            let _ = writeln!(add, "netns add {ns}");
        }
        run("ip", &["-batch", "-"], Some(&add))?;
        let router: Vec<String> = attach
            .iter()
            .map(|(ns, veth, addr)| attach_script(ns, veth, *addr))
            .collect();
        ip6_batch(router_ns, &router.join("\n"))?;
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = attach
                .chunks(attach.len().div_ceil(8).max(1))
                .map(|chunk| {
                    s.spawn(move || {
                        for (ns, _, addr) in chunk {
                            ip6_batch(ns, &endpoint_script(*addr))?;
                            progress(Progress::Tick((*ns).to_string()));
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(LabError::SetupPanicked)))
                .collect()
        });
        results.into_iter().collect()
    }

    /// Waits for every started pod to listen; a gVisor pod that does not
    /// come up falls back to a plain process, and says so.
    fn wait_pods(
        &self,
        mut started: Vec<(PodPlan, u32)>,
        env: &[(&str, String)],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<Running<PodPlan>>> {
        let mut pending: BTreeMap<usize, Instant> =
            (0..started.len()).map(|i| (i, Instant::now())).collect();
        let limit = Duration::from_secs(30);
        while !pending.is_empty() {
            let mut done = Vec::new();
            let mut retry = Vec::new();
            for (&i, &since) in &pending {
                let (p, pid) = &started[i];
                if listening(*pid, &p.ports) {
                    done.push(i);
                    progress(Progress::Tick(format!(
                        "{}/{} ({})",
                        p.tenant, p.name, p.runtime
                    )));
                } else if !pid_alive(*pid) || since.elapsed() > limit {
                    if p.runtime != Runtime::Runsc {
                        return Err(LabError::NotReady(
                            format!("pod {}/{}", p.tenant, p.name),
                            limit,
                        ));
                    }
                    retry.push(i);
                }
            }
            for i in done {
                pending.remove(&i);
            }
            for i in retry {
                started[i] = self.restart_plain(&started[i].0, env, progress)?;
                pending.insert(i, Instant::now());
            }
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(started
            .into_iter()
            .map(|(spec, pid)| Running { spec, pid })
            .collect())
    }

    /// Runs a pod gVisor did not start as a plain process instead.
    fn restart_plain(
        &self,
        pod: &PodPlan,
        env: &[(&str, String)],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(PodPlan, u32)> {
        let mut plain = pod.clone();
        kill_namespace_processes(&plain.netns)?;
        plain.runtime = Runtime::Plain;
        progress(Progress::Note(format!(
            "{}/{}: gVisor did not start it; running it as a plain process",
            plain.tenant, plain.name
        )));
        let pid = self.spawn(
            &plain.netns,
            Runtime::Plain,
            &pod_workload(&plain),
            &pod_listen(&plain),
            env,
        )?;
        Ok((plain, pid))
    }
}

/// What `sync` changes: the running pods and gateways split into those
/// the plan keeps and those that went away, and what is new.
struct Diff {
    keep: Vec<Running<PodPlan>>,
    gone: Vec<Running<PodPlan>>,
    new_pods: Vec<PodPlan>,
    keep_gw: Vec<Running<GatewayPlan>>,
    gone_gw: Vec<Running<GatewayPlan>>,
    new_gw: Vec<GatewayPlan>,
}

impl Diff {
    /// Takes `state`'s pods and gateways apart against `plan`.
    fn of(state: &mut LabState, plan: &Plan) -> Self {
        let same_pod = |a: &PodPlan, b: &PodPlan| {
            a.netns == b.netns && a.addr == b.addr && a.ports == b.ports && a.image == b.image
        };
        let (keep, gone): (Vec<_>, Vec<_>) = state
            .pods
            .drain(..)
            .partition(|r| plan.pods.iter().any(|p| same_pod(p, &r.spec)));
        let new_pods = plan
            .pods
            .iter()
            .filter(|p| !keep.iter().any(|r| same_pod(p, &r.spec)))
            .cloned()
            .collect();
        let (keep_gw, gone_gw): (Vec<_>, Vec<_>) = state
            .gateways
            .drain(..)
            .partition(|r| plan.gateways.contains(&r.spec));
        let new_gw = plan
            .gateways
            .iter()
            .filter(|g| !keep_gw.iter().any(|r| r.spec == **g))
            .cloned()
            .collect();
        Self {
            keep,
            gone,
            new_pods,
            keep_gw,
            gone_gw,
            new_gw,
        }
    }
}

/// Egress addresses on the proxy's outside interface and their routes.
fn update_egress_addresses(state: &LabState, plan: &Plan) -> Result<()> {
    let old: BTreeSet<_> = state.egress.iter().map(|e| e.ip).collect();
    let new: BTreeSet<_> = plan.egress.iter().map(|e| e.ip).collect();
    let (mut router, mut proxy) = (String::new(), String::new());
    for ip in old.difference(&new) {
        let _ = writeln!(router, "route del {ip}/128 dev proxy-out");
        let _ = writeln!(proxy, "addr del {ip}/128 dev out");
    }
    for ip in new.difference(&old) {
        let _ = writeln!(router, "route add {ip}/128 dev proxy-out");
        let _ = writeln!(proxy, "addr add {ip}/128 dev out nodad");
    }
    if !router.is_empty() {
        ip6_batch(&state.infra.router, &router)?;
        ip6_batch(&state.infra.proxy, &proxy)?;
    }
    Ok(())
}

/// A namespace to attach: (namespace, router-side veth, address).
type Attach<'a> = (&'a str, &'a str, std::net::Ipv6Addr);

/// The router's side of an attached namespace: the veth, the router's
/// link-local address on it, and a /128 route to the namespace.
fn attach_script(ns: &str, veth: &str, addr: std::net::Ipv6Addr) -> String {
    format!(
        "link add {veth} type veth peer name eth0 netns {ns}\n\
         link set {veth} up\n\
         addr add {ROUTER_LINK_LOCAL}/64 dev {veth} nodad\n\
         route replace {addr}/128 dev {veth}"
    )
}

/// The proxy variables every pod gets (`HTTP_PROXY` and friends).
fn proxy_env(plan: &Plan) -> Vec<(&'static str, String)> {
    let url = format!("http://[{PROXY_ADDR}]:{}", plan.options.policy.proxy_port);
    ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
        .into_iter()
        .map(|k| (k, url.clone()))
        .collect()
}

fn proxy_yaml(plan: &Plan) -> Result<String> {
    plan.proxy_config.to_yaml().map_err(LabError::ProxyConfig)
}

fn pod_workload(p: &PodPlan) -> Workload {
    Workload::Pod {
        tenant: p.tenant.clone(),
        deployment: p.deployment.clone(),
        pod: p.name.clone(),
    }
}

fn pod_listen(p: &PodPlan) -> Vec<SocketAddr> {
    p.ports
        .iter()
        .map(|port| SocketAddr::new(IpAddr::V6(p.addr), *port))
        .collect()
}

fn gateway_workload(g: &GatewayPlan) -> Workload {
    Workload::Gateway {
        routes: g
            .routes
            .iter()
            .map(|r| (r.host.clone(), r.backends.clone()))
            .collect(),
    }
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Whether `pid` is a process the lab started (not a reused pid).
fn is_ours(pid: u32, exe: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains("runsc") || cmdline.contains(&*exe.to_string_lossy())
}

/// Kills every process in namespace `netns` and waits until they are gone.
fn kill_namespace_processes(netns: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = run("ip", &["netns", "pids", netns], None).unwrap_or_default();
        let pids: Vec<u32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return Ok(());
        }
        for pid in pids {
            kill(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a namespace's processes and deletes it (with its links and tables).
fn remove_namespace(netns: &str) -> Result<()> {
    kill_namespace_processes(netns)?;
    match run("ip", &["netns", "del", netns], None) {
        Ok(_) => Ok(()),
        Err(LabError::Command { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every lab namespace on the host (all labs), for `lab down --all`.
pub fn down_all(progress: &(dyn Fn(Progress) + Sync)) -> Result<Vec<String>> {
    let found = namespaces_with_prefix(plan::NAME_PREFIX)?;
    progress(Progress::Phase {
        name: "down".into(),
        total: found.len() as u64,
    });
    for ns in &found {
        remove_namespace(ns)?;
        progress(Progress::Tick(ns.clone()));
    }
    Ok(found)
}

/// Whether `pid` is still running.
pub fn alive(pid: u32) -> bool {
    pid_alive(pid)
}
