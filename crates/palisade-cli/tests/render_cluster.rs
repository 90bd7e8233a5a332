//! `palisade render cluster`: states its support matrix and what egress IPs
//! need, writes nothing when the address plan or the gVisor pin is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::Env;

fn pins() -> Vec<String> {
    vec![
        "--gvisor-runsc-sha512".into(),
        "ab".repeat(64),
        "--gvisor-shim-sha512".into(),
        "cd".repeat(64),
    ]
}

fn render_cluster(env: &Env, out: &str, extra: &[&str]) -> support::Run {
    let mut args = vec!["render", "cluster", "--out", out];
    let pins = pins();
    args.extend(pins.iter().map(String::as_str));
    args.extend_from_slice(extra);
    env.run(&args)
}

#[test]
fn help_states_the_support_matrix_and_what_egress_ips_need() {
    let help = Env::new().run(&["render", "cluster", "--help"]).ok();
    for needle in [
        "Kubernetes 1.31 to 1.34",
        "Amazon Linux 2023: containerd 2, config version 3",
        "Cilium 1.18.11 (default) or 1.17.17",
        "Gateway API standard channel v1.2.1 or later",
        "Flux 2.4 or later",
        "secondary private IP",
        "Elastic IP",
        "--vpc-cidr",
        "--service-cidr",
        "--gvisor-runsc-sha512",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn overlapping_ranges_and_missing_pins_are_refused_and_nothing_is_written() {
    let env = Env::seeded();
    let dir = env.dir.path().join("cluster");
    let out = dir.to_str().unwrap();
    // EKS's own Service range as the pod range.
    render_cluster(&env, out, &["--ipv4-pod-cidr", "10.100.0.0/16"])
        .fails_with("overlaps the IPv4 pod range 10.100.0.0/16");
    assert!(!dir.exists());
    render_cluster(&env, out, &["--vpc-cidr", "10.0.0.0/8"]).fails_with("VPC range 10.0.0.0/8");
    render_cluster(&env, out, &["--ipv6-pod-cidr", "fd00:9::/96"]).fails_with("tenant pool");
    render_cluster(&env, out, &["--cilium-version", "1.16.5"]).fails_with("Cilium 1.16.5");
    render_cluster(&env, out, &["--kubernetes-version", "1.30"]).fails_with("Kubernetes 1.30");
    env.run(&["render", "cluster", "--out", out])
        .fails_with("--gvisor-runsc-sha512");
    assert!(!dir.exists());

    let summary = render_cluster(&env, out, &["--cilium-version", "1.17.17"]).ok();
    assert!(summary.contains("setup.sh"), "{summary}");
    let setup = std::fs::read_to_string(dir.join("setup.sh")).unwrap();
    assert!(setup.contains("--version 1.17.17"), "{setup}");
    assert!(
        setup.contains("gateway-api/releases/download/v1.2.1/"),
        "{setup}"
    );
}
