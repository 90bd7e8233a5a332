//! What a deployment's container needs beyond its image to start: the
//! environment, the command line, writable scratch directories and how much
//! privilege it gets.
//!
//! The seed's own images show why these are per deployment: `postgres:14`
//! refuses to start without `POSTGRES_PASSWORD`, `node:18-alpine` runs `node`
//! with nothing to do unless given a command, and `nginx` writes its cache
//! and pid file under a root filesystem that the platform may make read-only.
//! One cluster-wide security setting cannot fit nginx (starts as root) and a
//! hardened image (never does) at once.
//!
//! Names follow the Kubernetes validation rules so a spec accepted here is
//! one the API server accepts: environment variable names match
//! `[-._a-zA-Z][-._a-zA-Z0-9]*` (`IsEnvVarName`, k8s.io/apimachinery
//! `pkg/util/validation`), Secret names are DNS-1123 subdomains and Secret
//! keys are `[-._a-zA-Z0-9]+`, at most 253 characters, neither `.` nor `..`
//! nor starting with `..` (`IsConfigMapKey`).

use super::{Memory, ModelError};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Environment variables Palisade sets itself on every proxied pod; a
/// deployment may not override them, or its traffic would bypass the
/// tenant's egress proxy.
pub const RESERVED_ENV: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "PROXY_ADDRESS",
    "PROXY_PORT",
];

/// The longest Secret name or key Kubernetes accepts.
const SUBDOMAIN_MAX: usize = 253;

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> ModelError {
    ModelError::InvalidWorkload {
        what,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn check_env_name(s: &str) -> Result<(), ModelError> {
    let what = "environment variable name";
    let Some(first) = s.chars().next() else {
        return Err(invalid(what, s, "must not be empty"));
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if first.is_ascii_digit() || !ok(first) {
        return Err(invalid(
            what,
            s,
            "must start with a letter, '_', '-' or '.' ([-._a-zA-Z][-._a-zA-Z0-9]*)",
        ));
    }
    if let Some(c) = s.chars().find(|c| !ok(*c)) {
        return Err(invalid(
            what,
            s,
            format!("contains {c:?}; only letters, digits, '_', '-' and '.' are allowed"),
        ));
    }
    if RESERVED_ENV.contains(&s) {
        return Err(invalid(
            what,
            s,
            "is set by Palisade to route egress through the tenant's proxy",
        ));
    }
    Ok(())
}

fn check_secret_name(s: &str) -> Result<(), ModelError> {
    let what = "secret name";
    if s.is_empty() || s.len() > SUBDOMAIN_MAX {
        return Err(invalid(what, s, "must be 1 to 253 characters long"));
    }
    for label in s.split('.') {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let edges = label.starts_with(alnum) && label.ends_with(alnum);
        if !edges || !label.chars().all(|c| alnum(c) || c == '-') {
            return Err(invalid(
                what,
                s,
                "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', \
                 each dot-separated part starting and ending with a letter or digit",
            ));
        }
    }
    Ok(())
}

fn check_secret_key(s: &str) -> Result<(), ModelError> {
    let what = "secret key";
    if s.is_empty() || s.len() > SUBDOMAIN_MAX {
        return Err(invalid(what, s, "must be 1 to 253 characters long"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(invalid(
            what,
            s,
            format!("contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"),
        ));
    }
    if s == "." || s.starts_with("..") {
        return Err(invalid(
            what,
            s,
            "must not be '.' or '..' or start with '..'",
        ));
    }
    Ok(())
}

checked_string!(
    /// An environment variable name a deployment may set.
    EnvName,
    check_env_name
);
checked_string!(
    /// The name of a Secret in the tenant's namespace.
    SecretName,
    check_secret_name
);
checked_string!(
    /// A key inside a Secret.
    SecretKey,
    check_secret_key
);

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnvValue {
    /// A value written into the Deployment as is.
    Literal(String),
    /// A key of a Secret in the tenant's namespace, read by the kubelet when
    /// the pod starts (`valueFrom.secretKeyRef`), so the value never passes
    /// through Palisade.
    SecretKey {
        /// The Secret.
        secret: SecretName,
        /// The key inside it.
        key: SecretKey,
    },
}

/// One environment variable of a deployment's container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawEnvVar", into = "RawEnvVar")]
pub struct EnvVar {
    /// The variable's name.
    pub name: EnvName,
    /// Its value.
    pub value: EnvValue,
}

impl EnvVar {
    /// Parses `--env NAME=VALUE` (the value may be empty or contain `=`).
    pub fn parse_literal(s: &str) -> Result<Self, ModelError> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| invalid("environment variable", s, "expected NAME=VALUE"))?;
        Ok(Self {
            name: name.parse()?,
            value: EnvValue::Literal(value.to_owned()),
        })
    }

    /// Parses `--env-from-secret NAME=SECRET:KEY`.
    pub fn parse_secret_ref(s: &str) -> Result<Self, ModelError> {
        let syntax = || {
            invalid(
                "environment variable from a secret",
                s,
                "expected NAME=SECRET:KEY",
            )
        };
        let (name, source) = s.split_once('=').ok_or_else(syntax)?;
        let (secret, key) = source.split_once(':').ok_or_else(syntax)?;
        Ok(Self {
            name: name.parse()?,
            value: EnvValue::SecretKey {
                secret: secret.parse()?,
                key: key.parse()?,
            },
        })
    }
}

/// The stored and imported shape of an [`EnvVar`]: `{name, value}` or
/// `{name, secret, key}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvVar {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl TryFrom<RawEnvVar> for EnvVar {
    type Error = ModelError;
    fn try_from(r: RawEnvVar) -> Result<Self, Self::Error> {
        let value = match (r.value, r.secret, r.key) {
            (Some(v), None, None) => EnvValue::Literal(v),
            (None, Some(secret), Some(key)) => EnvValue::SecretKey {
                secret: secret.try_into()?,
                key: key.try_into()?,
            },
            _ => {
                return Err(invalid(
                    "environment variable",
                    &r.name,
                    "needs either `value` or both `secret` and `key`",
                ));
            }
        };
        Ok(Self {
            name: r.name.try_into()?,
            value,
        })
    }
}

impl From<EnvVar> for RawEnvVar {
    fn from(e: EnvVar) -> Self {
        let name = e.name.into();
        match e.value {
            EnvValue::Literal(v) => Self {
                name,
                value: Some(v),
                secret: None,
                key: None,
            },
            EnvValue::SecretKey { secret, key } => Self {
                name,
                value: None,
                secret: Some(secret.into()),
                key: Some(key.into()),
            },
        }
    }
}

/// An absolute, normalised directory inside the container.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct MountPath(String);

impl MountPath {
    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MountPath {
    type Err = ModelError;
    /// Accepts `/a/b`, drops repeated slashes, `.` parts and a trailing
    /// slash; refuses relative paths, `..`, `/` itself and NUL or `:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let what = "scratch path";
        if !s.starts_with('/') {
            return Err(invalid(
                what,
                s,
                "must be an absolute path, e.g. /var/cache/nginx",
            ));
        }
        if s.contains(['\0', ':']) {
            return Err(invalid(what, s, "must not contain ':' or NUL"));
        }
        let mut parts = Vec::new();
        for part in s.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(invalid(what, s, "must not contain '..'"));
            }
            parts.push(part);
        }
        if parts.is_empty() {
            return Err(invalid(what, s, "must not be the root directory"));
        }
        Ok(Self(format!("/{}", parts.join("/"))))
    }
}

impl TryFrom<String> for MountPath {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MountPath> for String {
    fn from(p: MountPath) -> String {
        p.0
    }
}

impl fmt::Display for MountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A writable empty directory mounted into the container, which lives as
/// long as the pod: room to write under a read-only root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ScratchVolume {
    /// Where it is mounted.
    pub path: MountPath,
    /// The most it may hold before the kubelet evicts the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Memory>,
}

impl FromStr for ScratchVolume {
    type Err = ModelError;
    /// Parses `--scratch PATH[:SIZE]`, e.g. `/var/cache/nginx:64Mi`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, size) = match s.split_once(':') {
            Some((p, size)) => (p, Some(size.parse()?)),
            None => (s, None),
        };
        Ok(Self {
            path: path.parse()?,
            size_limit: size,
        })
    }
}

/// How much privilege a deployment's container gets, named after the
/// Kubernetes Pod Security Standards level it satisfies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityProfile {
    /// Pod Security Standards `restricted`: runs as UID/GID 65532 (never
    /// root), no capabilities but `NET_BIND_SERVICE`, plus a read-only root
    /// filesystem (add scratch directories where the image writes).
    Restricted,
    /// Pod Security Standards `baseline`: may start as root and keeps the
    /// few capabilities such images need to drop privileges themselves
    /// (`CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `NET_BIND_SERVICE`, `SETGID`,
    /// `SETUID`); writable root filesystem.
    Baseline,
    /// `baseline` with a read-only root filesystem: for images like nginx
    /// that start as root but write only to a few known directories (give
    /// them as scratch directories).
    BaselineReadOnly,
}

impl SecurityProfile {
    /// Every profile, for help texts.
    pub const ALL: [SecurityProfile; 3] = [
        SecurityProfile::Restricted,
        SecurityProfile::Baseline,
        SecurityProfile::BaselineReadOnly,
    ];

    /// The profile's name as typed and stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            SecurityProfile::Restricted => "restricted",
            SecurityProfile::Baseline => "baseline",
            SecurityProfile::BaselineReadOnly => "baseline-read-only",
        }
    }

    /// Whether the container must run as a non-root user.
    pub const fn run_as_non_root(self) -> bool {
        matches!(self, SecurityProfile::Restricted)
    }

    /// Whether the root filesystem is mounted read-only.
    pub const fn read_only_root_fs(self) -> bool {
        !matches!(self, SecurityProfile::Baseline)
    }

    /// The Pod Security Standards level (`pod-security.kubernetes.io/enforce`)
    /// the profile satisfies.
    pub const fn pod_security_level(self) -> &'static str {
        match self {
            SecurityProfile::Restricted => "restricted",
            SecurityProfile::Baseline | SecurityProfile::BaselineReadOnly => "baseline",
        }
    }
}

impl FromStr for SecurityProfile {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                invalid(
                    "security profile",
                    s,
                    "must be restricted, baseline or baseline-read-only",
                )
            })
    }
}

impl fmt::Display for SecurityProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a deployment's container needs beyond its image. The default
/// runs the image as built under the platform's security settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawWorkload", into = "RawWorkload")]
pub struct WorkloadSpec {
    env: Vec<EnvVar>,
    command: Vec<String>,
    args: Vec<String>,
    scratch: Vec<ScratchVolume>,
    security: Option<SecurityProfile>,
}

impl WorkloadSpec {
    /// A spec, refusing a variable set twice or a directory mounted twice.
    pub fn new(
        env: Vec<EnvVar>,
        command: Vec<String>,
        args: Vec<String>,
        scratch: Vec<ScratchVolume>,
        security: Option<SecurityProfile>,
    ) -> Result<Self, ModelError> {
        let mut names = BTreeSet::new();
        if let Some(e) = env.iter().find(|e| !names.insert(&e.name)) {
            return Err(invalid(
                "environment variable name",
                e.name.as_str(),
                "is set twice",
            ));
        }
        let mut paths = BTreeSet::new();
        if let Some(s) = scratch.iter().find(|s| !paths.insert(&s.path)) {
            return Err(invalid("scratch path", s.path.as_str(), "is given twice"));
        }
        Ok(Self {
            env,
            command,
            args,
            scratch,
            security,
        })
    }

    /// Environment variables, in the order given.
    pub fn env(&self) -> &[EnvVar] {
        &self.env
    }
    /// Replaces the image's entrypoint when not empty.
    pub fn command(&self) -> &[String] {
        &self.command
    }
    /// Replaces the image's default arguments when not empty.
    pub fn args(&self) -> &[String] {
        &self.args
    }
    /// Writable scratch directories.
    pub fn scratch(&self) -> &[ScratchVolume] {
        &self.scratch
    }
    /// The chosen profile; `None` takes the platform's default.
    pub fn security(&self) -> Option<SecurityProfile> {
        self.security
    }
    /// Whether nothing is set (the image as built, platform security).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The stored and imported shape of a [`WorkloadSpec`]; empty parts are
/// left out.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct RawWorkload {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scratch: Vec<ScratchVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    security: Option<SecurityProfile>,
}

impl TryFrom<RawWorkload> for WorkloadSpec {
    type Error = ModelError;
    fn try_from(r: RawWorkload) -> Result<Self, Self::Error> {
        Self::new(r.env, r.command, r.args, r.scratch, r.security)
    }
}

impl From<WorkloadSpec> for RawWorkload {
    fn from(w: WorkloadSpec) -> Self {
        Self {
            env: w.env,
            command: w.command,
            args: w.args,
            scratch: w.scratch,
            security: w.security,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_kubernetes_and_refuse_palisades_own() {
        for good in ["POSTGRES_PASSWORD", "_x", "a.b-c", "-dash"] {
            assert!(good.parse::<EnvName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "1ABC",
            "A B",
            "A=B",
            "Ä",
            "HTTP_PROXY",
            "no_proxy",
            "PROXY_PORT",
        ] {
            assert!(bad.parse::<EnvName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn env_flags_parse_literal_and_secret_forms() {
        let e = EnvVar::parse_literal("A=b=c").unwrap();
        assert_eq!(e.value, EnvValue::Literal("b=c".into()));
        assert!(EnvVar::parse_literal("novalue").is_err());
        let s = EnvVar::parse_secret_ref("POSTGRES_PASSWORD=pg-auth:password").unwrap();
        assert_eq!(
            s.value,
            EnvValue::SecretKey {
                secret: "pg-auth".parse().unwrap(),
                key: "password".parse().unwrap()
            }
        );
        for bad in ["P=pg", "P=Pg:k", "P=pg:", "P=pg:..k", "P=-pg:k"] {
            assert!(EnvVar::parse_secret_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scratch_paths_are_absolute_and_normalised() {
        let s: ScratchVolume = "/var//cache/./nginx/:64Mi".parse().unwrap();
        assert_eq!(s.path.as_str(), "/var/cache/nginx");
        assert_eq!(s.size_limit.unwrap().bytes(), 64 << 20);
        for bad in ["tmp", "/", "/a/../etc", "/tmp:", "/tmp:lots", ""] {
            assert!(bad.parse::<ScratchVolume>().is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_refuse_duplicates_and_round_trip_through_json() {
        let env = || EnvVar::parse_literal("A=1").unwrap();
        assert!(WorkloadSpec::new(vec![env(), env()], vec![], vec![], vec![], None).is_err());
        let tmp = || "/tmp".parse::<ScratchVolume>().unwrap();
        assert!(WorkloadSpec::new(vec![], vec![], vec![], vec![tmp(), tmp()], None).is_err());
        let spec = WorkloadSpec::new(
            vec![env(), EnvVar::parse_secret_ref("P=s:k").unwrap()],
            vec!["node".into()],
            vec!["-e".into(), "1".into()],
            vec![tmp()],
            Some(SecurityProfile::BaselineReadOnly),
        )
        .unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<WorkloadSpec>(&json).unwrap(), spec);
        assert_eq!(
            serde_json::to_string(&WorkloadSpec::default()).unwrap(),
            "{}"
        );
        let both = r#"{"env":[{"name":"A","value":"1","secret":"s","key":"k"}]}"#;
        assert!(serde_json::from_str::<WorkloadSpec>(both).is_err());
    }

    #[test]
    fn profiles_parse_by_name_and_say_what_they_allow() {
        let p: SecurityProfile = "baseline-read-only".parse().unwrap();
        assert!(p.read_only_root_fs() && !p.run_as_non_root());
        assert_eq!(p.pod_security_level(), "baseline");
        assert!("privileged".parse::<SecurityProfile>().is_err());
    }
}
