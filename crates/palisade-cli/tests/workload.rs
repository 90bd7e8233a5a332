//! Per-deployment environment, command, scratch directories and security
//! profile, and the tenant's egress addresses and proxy port, through the
//! real binary: what is stored is what `list`, `tenant show` and `render`
//! give back, and a bad value is one line naming it, with nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::Env;

fn initialised() -> Env {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:7::/48"]).ok();
    env
}

#[test]
fn create_stores_what_each_seed_image_needs_and_render_carries_it() {
    let env = initialised();
    env.run(&[
        "create",
        "acme",
        "database",
        "postgres:14",
        "--port",
        "5432",
        "--env",
        "PGDATA=/var/lib/postgresql/data/pgdata",
        "--env-from-secret",
        "POSTGRES_PASSWORD=database-auth:password",
        "--security",
        "baseline",
    ])
    .ok();
    env.run(&[
        "create",
        "acme",
        "api",
        "node:18-alpine",
        "--port",
        "8080",
        "--command",
        "node",
        "--arg",
        "-e",
        "--arg",
        "require('http').createServer((q, s) => s.end('ok')).listen(8080)",
        "--security",
        "restricted",
    ])
    .ok();
    env.run(&[
        "create",
        "acme",
        "web",
        "nginx:alpine",
        "--scratch",
        "/var/cache/nginx/:64Mi",
        "--scratch",
        "/var/run",
        "--security",
        "baseline-read-only",
    ])
    .ok();

    let list = env.json(&["list"]);
    let by_name = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == n)
            .unwrap()
            .clone()
    };
    let db = by_name("database");
    assert_eq!(
        db["env"],
        json!([
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
            {"name": "POSTGRES_PASSWORD", "secret": "database-auth", "key": "password"}
        ])
    );
    assert_eq!(db["security"], "baseline");
    let api = by_name("api");
    assert_eq!(api["command"], json!(["node"]));
    assert_eq!(api["args"][0], "-e");
    let web = by_name("web");
    assert_eq!(
        web["scratch"],
        json!([{"path": "/var/cache/nginx", "size_limit": "64Mi"}, {"path": "/var/run"}])
    );
    assert!(env.run(&["check"]).ok().starts_with("ok:"));

    let yaml = env.run(&["render", "--stdout"]).ok();
    for needle in [
        "secretKeyRef:",
        "name: database-auth",
        "mountPath: /var/cache/nginx",
        "sizeLimit: 64Mi",
        "runAsUser: 65532",
    ] {
        assert!(yaml.contains(needle), "render lacks {needle:?}");
    }
}

#[test]
fn a_bad_workload_flag_is_one_line_naming_the_value_and_changes_nothing() {
    let env = initialised();
    env.run(&["create", "acme", "web", "nginx:alpine"]).ok();
    let before = env.observable();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--env", "1BAD=x"],
            "invalid environment variable name \"1BAD\"",
        ),
        (
            &["--env", "HTTP_PROXY=http://elsewhere:3128"],
            "\"HTTP_PROXY\": is set by Palisade",
        ),
        (
            &["--env", "no_proxy=*"],
            "invalid environment variable name \"no_proxy\"",
        ),
        (&["--env", "NOVALUE"], "expected NAME=VALUE"),
        (&["--env", "A=1", "--env", "A=2"], "\"A\": is set twice"),
        (
            &["--env-from-secret", "P=Bad_Secret:key"],
            "invalid secret name \"Bad_Secret\"",
        ),
        (&["--env-from-secret", "P=pg"], "expected NAME=SECRET:KEY"),
        (
            &["--scratch", "var/cache/nginx"],
            "invalid scratch path \"var/cache/nginx\": must be an absolute path",
        ),
        (
            &["--scratch", "/var/../etc"],
            "invalid scratch path \"/var/../etc\": must not contain '..'",
        ),
        (
            &["--scratch", "/tmp:lots"],
            "invalid memory quantity \"lots\"",
        ),
        (
            &["--security", "privileged"],
            "invalid security profile \"privileged\"",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["create", "acme", "api", "node:18-alpine"];
        args.extend_from_slice(flags);
        env.run(&args).fails_with(needle);
        assert_eq!(
            env.observable(),
            before,
            "palisade {args:?} changed the state"
        );
    }
}

#[test]
fn import_accepts_the_same_fields_and_refuses_a_bad_one_whole() {
    let env = initialised();
    let file = env.dir.path().join("batch.yaml");
    std::fs::write(
        &file,
        "- tenant: acme\n  name: db\n  image: postgres:14\n  env:\n  - {name: POSTGRES_PASSWORD, secret: db-auth, key: password}\n  security: baseline\n\
         - tenant: acme\n  name: web\n  image: nginx:alpine\n  scratch:\n  - {path: var/cache/nginx}\n",
    )
    .unwrap();
    let before = env.observable();
    env.run(&["import", file.to_str().unwrap()])
        .fails_with("invalid scratch path \"var/cache/nginx\"");
    assert_eq!(env.observable(), before);

    std::fs::write(
        &file,
        "- tenant: acme\n  name: db\n  image: postgres:14\n  env:\n  - {name: POSTGRES_PASSWORD, secret: db-auth, key: password}\n  security: baseline\n\
         - tenant: acme\n  name: web\n  image: nginx:alpine\n  command: [nginx, -g, daemon off;]\n  scratch:\n  - {path: /var/cache/nginx, size_limit: 32Mi}\n",
    )
    .unwrap();
    env.run(&["import", file.to_str().unwrap()]).ok();
    let list = env.json(&["list"]);
    assert_eq!(list[0]["name"], "db");
    assert_eq!(list[0]["env"][0]["secret"], "db-auth");
    assert_eq!(list[1]["command"], json!(["nginx", "-g", "daemon off;"]));
    assert_eq!(list[1]["scratch"][0]["size_limit"], "32Mi");
}

#[test]
fn tenants_get_stable_proxy_ports_and_both_egress_addresses() {
    let env = initialised();
    let out = env
        .run(&[
            "tenant",
            "create",
            "big",
            "--egress-mode",
            "cilium-egress-gateway",
            "--egress-ip",
            "10.0.12.34",
            "--egress-public-ip",
            "203.0.113.10",
        ])
        .ok();
    assert!(out.contains("egress-proxy port 20000"), "{out}");
    env.run(&["create", "acme", "web", "nginx:alpine"]).ok();
    env.run(&["tenant", "create", "zed"]).ok();

    let tenants = env.json(&["tenant", "list"]);
    let ports: Vec<(String, u64)> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["proxy_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("acme".to_owned(), 20001),
            ("big".to_owned(), 20000),
            ("zed".to_owned(), 20002)
        ]
    );
    let big = env.json(&["tenant", "show", "big"]);
    assert_eq!(big["tenant"]["egress"]["ip"], "10.0.12.34");
    assert_eq!(big["tenant"]["egress"]["public_ip"], "203.0.113.10");
    let table = env.run(&["tenant", "show", "big"]).ok();
    for needle in ["10.0.12.34", "203.0.113.10", "20000"] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }

    // A deleted tenant's port goes to the next new tenant; others keep theirs.
    env.run(&["tenant", "delete", "big"]).ok();
    env.run(&["tenant", "create", "new"]).ok();
    assert_eq!(
        env.json(&["tenant", "show", "new"])["tenant"]["proxy_port"],
        20000
    );
    assert_eq!(
        env.json(&["tenant", "show", "zed"])["tenant"]["proxy_port"],
        20002
    );

    let before = env.observable();
    env.run(&["tenant", "create", "bad", "--egress-public-ip", "203.0.113"])
        .fails_with("invalid --egress-public-ip \"203.0.113\"");
    assert_eq!(env.observable(), before);
}
