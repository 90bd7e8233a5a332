//! The parts of a tenant's container that come from its deployment's
//! [`WorkloadSpec`]: environment, command line, scratch volumes and the
//! security context of its profile.
//!
//! Kept apart from `Cx::deployment` so the pod's network, placement and
//! policy wiring and the container's own needs change independently.
//! Kubernetes semantics relied on (core/v1, the pinned k8s-openapi):
//! `command` replaces the image's ENTRYPOINT and `args` its CMD;
//! `valueFrom.secretKeyRef` is resolved by the kubelet at container start
//! (the pod does not start while the key is missing); an `emptyDir` with
//! `sizeLimit` gets the pod evicted when it grows past the limit.

use crate::options::RenderOptions;
use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, EnvVar, EnvVarSource, SecretKeySelector, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use palisade_core::model::EnvValue;
use palisade_core::{Deployment, SecurityProfile};

/// What the container may do, from the deployment's profile or, when it
/// names none, the platform's `run_as_non_root` / `read_only_root_fs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Privilege {
    /// Must run as a non-root user.
    pub non_root: bool,
    /// Root filesystem mounted read-only.
    pub read_only_root: bool,
    /// UID and GID to run as, overriding the image's USER.
    pub user: Option<i64>,
}

/// The UID and GID the `restricted` profile runs as: the "nonroot" user of
/// distroless images. Without a numeric non-root user the kubelet refuses
/// a `runAsNonRoot` container whose image runs as root or names its user
/// ("container has runAsNonRoot and image will run as root",
/// kubernetes/kubernetes#47009; "image has non-numeric user",
/// kubernetes-up-and-running/kuard#43), which is most public images
/// (`node:18-alpine` among them).
pub(crate) const RESTRICTED_UID: i64 = 65532;

impl Privilege {
    /// The effective privilege of `d`'s container.
    pub fn of(d: &Deployment, opts: &RenderOptions) -> Self {
        match d.workload.security() {
            Some(p) => Self::from(p),
            None => Self {
                non_root: opts.run_as_non_root,
                read_only_root: opts.read_only_root_fs,
                user: None,
            },
        }
    }

    /// The container's security context: never privileged or escalating,
    /// every capability dropped but those the profile keeps.
    pub fn container(self) -> SecurityContext {
        let caps = if self.non_root {
            // All Pod Security Standards `restricted` lets a pod add.
            vec!["NET_BIND_SERVICE".to_owned()]
        } else {
            // What common images that start as root (nginx, postgres) need
            // to drop privileges themselves.
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "NET_BIND_SERVICE",
                "SETGID",
                "SETUID",
            ]
            .map(String::from)
            .to_vec()
        };
        SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(self.read_only_root),
            run_as_non_root: self.non_root.then_some(true),
            run_as_user: self.user,
            run_as_group: self.user,
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(caps),
            }),
            ..SecurityContext::default()
        }
    }
}

impl From<SecurityProfile> for Privilege {
    fn from(p: SecurityProfile) -> Self {
        Self {
            non_root: p.run_as_non_root(),
            read_only_root: p.read_only_root_fs(),
            user: p.run_as_non_root().then_some(RESTRICTED_UID),
        }
    }
}

/// The deployment's own environment variables, in the order given.
pub(crate) fn env(d: &Deployment) -> Vec<EnvVar> {
    d.workload
        .env()
        .iter()
        .map(|e| match &e.value {
            EnvValue::Literal(v) => EnvVar {
                name: e.name.to_string(),
                value: Some(v.clone()),
                ..EnvVar::default()
            },
            EnvValue::SecretKey { secret, key } => EnvVar {
                name: e.name.to_string(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.to_string(),
                        key: key.to_string(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        })
        .collect()
}

/// One `emptyDir` volume per scratch path (`scratch-0`, `scratch-1`, ...)
/// and the container's mounts of them.
pub(crate) fn scratch(d: &Deployment) -> (Vec<Volume>, Vec<VolumeMount>) {
    d.workload
        .scratch()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = format!("scratch-{i}");
            let volume = Volume {
                name: name.clone(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: None,
                    size_limit: s.size_limit.map(|m| Quantity(m.to_string())),
                }),
                ..Volume::default()
            };
            let mount = VolumeMount {
                name,
                mount_path: s.path.to_string(),
                ..VolumeMount::default()
            };
            (volume, mount)
        })
        .unzip()
}
