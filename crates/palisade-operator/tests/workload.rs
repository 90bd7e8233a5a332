//! The new per-deployment and per-tenant fields of the custom resources
//! reach the core model the renderer reads, through the same parsers as
//! the CLI: a bad value is an `InvalidSpec`, never a silently dropped field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_core::model::{EnvValue, ScratchVolume};
use palisade_core::{SecurityProfile, TenantName};
use palisade_operator::crd::{
    EgressSpec, EnvVarSourceSpec, EnvVarSpec, ScratchSpec, SecretKeyRefSpec, SecurityProfileSpec,
    TenantDeploymentSpec, TenantSpec,
};
use palisade_operator::desired::{SpecError, core_deployment, core_tenant, explain};

fn postgres() -> TenantDeploymentSpec {
    TenantDeploymentSpec {
        image: "postgres:14".into(),
        replicas: 1,
        ports: vec![5432],
        env: vec![
            EnvVarSpec {
                name: "PGDATA".into(),
                value: "/var/lib/postgresql/data/pgdata".into(),
                value_from: None,
            },
            EnvVarSpec {
                name: "POSTGRES_PASSWORD".into(),
                value: String::new(),
                value_from: Some(EnvVarSourceSpec {
                    secret_key_ref: SecretKeyRefSpec {
                        name: "db-auth".into(),
                        key: "password".into(),
                    },
                }),
            },
        ],
        command: vec!["docker-entrypoint.sh".into()],
        args: vec!["postgres".into()],
        scratch: vec![ScratchSpec {
            path: "/var/run/postgresql/".into(),
            size_limit: Some("16Mi".into()),
        }],
        security: Some(SecurityProfileSpec::BaselineReadOnly),
        ..TenantDeploymentSpec::default()
    }
}

#[test]
fn workload_fields_of_a_tenant_deployment_reach_the_model() {
    let t: TenantName = "acme".parse().unwrap();
    let d = core_deployment(&t, "db", &postgres(), "fd00::/96".parse().unwrap()).unwrap();
    let w = &d.workload;
    // Secret-sourced env is the model's; literal env stays with the
    // operator's container overlay.
    assert_eq!(w.env().len(), 1);
    assert_eq!(w.env()[0].name.as_str(), "POSTGRES_PASSWORD");
    assert!(matches!(&w.env()[0].value,
        EnvValue::SecretKey { secret, key } if secret.as_str() == "db-auth" && key.as_str() == "password"));
    assert_eq!(w.command(), ["docker-entrypoint.sh"]);
    assert_eq!(w.args(), ["postgres"]);
    assert_eq!(
        w.scratch(),
        ["/var/run/postgresql:16Mi".parse::<ScratchVolume>().unwrap()]
    );
    assert_eq!(w.security(), Some(SecurityProfile::BaselineReadOnly));
}

/// The field a spec error names and its cause's message; the error's own
/// message says only which field failed (the cause is its source).
fn field_and_cause(e: &SpecError) -> (String, String) {
    use std::error::Error as _;
    match e {
        SpecError::Field { field, source } => {
            assert_eq!(e.to_string(), format!("invalid {field}"));
            assert!(e.source().is_some());
            (field.clone(), source.to_string())
        }
        other => panic!("not a field error: {other:?}"),
    }
}

#[test]
fn bad_workload_fields_are_invalid_specs_naming_the_field_with_the_model_error_as_source() {
    let t: TenantName = "acme".parse().unwrap();
    let net = "fd00::/96".parse().unwrap();
    let mut s = postgres();
    s.scratch[0].path = "var/run".into();
    let (field, cause) = field_and_cause(&core_deployment(&t, "db", &s, net).unwrap_err());
    assert_eq!(field, "spec.scratch");
    assert!(
        cause.contains("invalid scratch path \"var/run\""),
        "{cause}"
    );
    let mut s = postgres();
    s.env[1].value_from.as_mut().unwrap().secret_key_ref.name = "DB".into();
    let (field, cause) = field_and_cause(&core_deployment(&t, "db", &s, net).unwrap_err());
    assert_eq!(field, "spec.env");
    assert!(cause.contains("invalid secret name \"DB\""), "{cause}");
    let mut s = postgres();
    s.env[1].name = "HTTPS_PROXY".into();
    let e = core_deployment(&t, "db", &s, net).unwrap_err();
    let (field, cause) = field_and_cause(&e);
    assert_eq!(field, "spec.env");
    assert!(
        cause.contains("\"HTTPS_PROXY\": is set by Palisade"),
        "{cause}"
    );
    // What a condition or event carries: the field, then the cause.
    assert!(
        explain(&e).starts_with("invalid spec.env: ") && explain(&e).contains("HTTPS_PROXY"),
        "{}",
        explain(&e)
    );
    let mut s = postgres();
    s.image = "Not An Image".into();
    let (field, _) = field_and_cause(&core_deployment(&t, "db", &s, net).unwrap_err());
    assert_eq!(field, "spec.image");
}

#[test]
fn a_tenant_resource_carries_both_egress_addresses_and_its_proxy_port() {
    let spec = TenantSpec {
        egress: EgressSpec {
            ip: Some("10.0.12.34".into()),
            public_ip: Some("203.0.113.10".into()),
            ..EgressSpec::default()
        },
        proxy_port: Some(20007),
        ..TenantSpec::default()
    };
    let t = core_tenant("big", &spec).unwrap();
    assert_eq!(t.egress.ip, Some("10.0.12.34".parse().unwrap()));
    assert_eq!(t.egress.public_ip, Some("203.0.113.10".parse().unwrap()));
    assert_eq!(t.proxy_port, 20007);
    // Not assigned yet: 0, as in the model.
    assert_eq!(
        core_tenant("big", &TenantSpec::default())
            .unwrap()
            .proxy_port,
        0
    );
    let bad = TenantSpec {
        proxy_port: Some(3128),
        ..TenantSpec::default()
    };
    let e = core_tenant("big", &bad).unwrap_err();
    assert!(
        matches!(e, SpecError::ProxyPort { port: 3128, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("invalid spec.proxyPort 3128"),
        "{e}"
    );
    let bad = TenantSpec {
        egress: EgressSpec {
            public_ip: Some("elastic".into()),
            ..EgressSpec::default()
        },
        ..TenantSpec::default()
    };
    let e = core_tenant("big", &bad).unwrap_err();
    assert_eq!(e.to_string(), "invalid spec.egress.publicIp \"elastic\"");
    assert!(matches!(
        &e,
        SpecError::Address {
            field: "spec.egress.publicIp",
            ..
        }
    ));
    assert!(
        std::error::Error::source(&e).is_some(),
        "the parser's reason is the source"
    );
}
