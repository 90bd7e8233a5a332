//! The GitOps tree: Kustomize base and overlays plus Flux objects, written
//! so that a re-render touches only what changed.
//!
//! The layout follows seed 002 and is laid out by lifetime, so deleting a
//! deployment deletes its file rather than editing a shared one:
//!
//! ```text
//! base/kustomization.yaml               platform + one entry per tenant
//! base/platform/<kind>-<name>.yaml      RuntimeClass, central gateway
//! base/tenants/<t>/kustomization.yaml   tenant.yaml, deployments, egress configMapGenerator
//! base/tenants/<t>/tenant.yaml          namespace, quota, RBAC, tenant policies
//! base/tenants/<t>/deployments/<d>.yaml pool, Deployment, Service, policy, routes
//! overlays/<env>/kustomization.yaml     patches + configMapGenerator (behavior: replace)
//! overlays/<env>/*-patch.yaml           replicas / resources JSON patches
//! clusters/<env>/palisade/              Flux: GitRepository + the one Kustomization
//!                                       that applies overlays/<env> (with a Git URL only)
//! .palisade-tree                        the files Palisade wrote with their content
//!                                       hashes (for removal and skipping), each
//!                                       tenant's input fingerprint, the Git source
//! ```
//!
//! Flux is laid out per cluster: one cluster bootstraps `clusters/<env>`
//! and so applies exactly one overlay. Two Flux Kustomizations applying
//! different overlays to one cluster would fight over the same objects
//! (replicas flip, and each prunes what the other applied).
//! `clusters/<env>/` itself holds no `kustomization.yaml`, so that
//! `flux bootstrap --path clusters/<env>` can add its own `flux-system/`
//! next to `palisade/`: without a root kustomization.yaml, Flux's
//! kustomize-controller generates one that takes in every sub-directory
//! holding a kustomization.yaml (fluxcd/pkg `kustomize/kustomize_generator.go`,
//! `generateKustomization`), and Flux's maintainers advise keeping
//! `clusters/<name>` free of one (fluxcd/flux2#4172).
//!
//! Only files listed in `.palisade-tree` are ever removed, so files a user
//! adds next to the tree are left alone. The bookkeeping holds content
//! hashes, never times, so rendering unchanged state in a fresh clone
//! rewrites no byte.

use crate::crds::{
    FluxKustomization, FluxKustomizationSpec, GitRef, GitRepository, GitRepositorySpec, SourceRef,
};
use crate::object::{Object, to_multi_doc};
use crate::options::{Environment, GitSource, RenderOptions};
use crate::render::{
    EGRESS_CONFIG, MANAGED_BY, Rendered, Renderer, TenantObjects, egress_literals,
};
use crate::{Error, yaml};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use palisade_core::{Snapshot, TenantName};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// The file listing what Palisade wrote last time.
pub const MANIFEST: &str = ".palisade-tree";

/// Relative path → file contents.
pub type Files = BTreeMap<String, String>;

/// What a tree write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSummary {
    /// Files that did not exist.
    pub added: Vec<String>,
    /// Files whose contents changed.
    pub changed: Vec<String>,
    /// Files removed because nothing renders them any more.
    pub removed: Vec<String>,
    /// Files left untouched.
    pub unchanged: usize,
}

impl TreeSummary {
    /// Whether the write changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Display for TreeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} added, {} changed, {} removed, {} unchanged",
            self.added.len(),
            self.changed.len(),
            self.removed.len(),
            self.unchanged
        )?;
        const SHOWN: usize = 20;
        for (sign, list) in [
            ("+", &self.added),
            ("~", &self.changed),
            ("-", &self.removed),
        ] {
            for p in list.iter().take(SHOWN) {
                writeln!(f, "  {sign} {p}")?;
            }
            if list.len() > SHOWN {
                writeln!(f, "  {sign} … and {} more", list.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

fn file_name(o: &Object) -> String {
    format!("{}-{}.yaml", o.kind.to_ascii_lowercase(), o.name)
}

fn kustomization(body: Value) -> String {
    let mut v = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    });
    if let (Value::Object(dst), Value::Object(src)) = (&mut v, body) {
        dst.extend(src);
    }
    yaml::to_string(&v)
}

fn literals(m: &BTreeMap<String, String>) -> Vec<String> {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The files of one tenant's directory.
fn tenant_files(t: &TenantObjects, options: &RenderOptions) -> Files {
    let dir = format!("base/tenants/{}", t.tenant);
    let mut out = Files::new();
    let mut resources = vec!["tenant.yaml".to_owned()];
    out.insert(format!("{dir}/tenant.yaml"), to_multi_doc(&t.objects));
    for d in &t.deployments {
        let rel = format!("deployments/{}.yaml", d.name);
        out.insert(format!("{dir}/{rel}"), to_multi_doc(&d.objects));
        resources.push(rel);
    }
    let mut k = json!({ "resources": resources });
    if let Some(port) = t.proxy_port {
        k["configMapGenerator"] = json!([{
            "name": EGRESS_CONFIG,
            "namespace": t.tenant.namespace(),
            "literals": literals(&egress_literals(options, None, port)),
            "options": { "labels": {
                MANAGED_BY.0: MANAGED_BY.1,
                crate::render::TENANT_LABEL: t.tenant.as_str(),
            }},
        }]);
    }
    out.insert(format!("{dir}/kustomization.yaml"), kustomization(k));
    out
}

/// What the shared files need to know about a tenant.
struct TenantEntry {
    name: TenantName,
    /// Its egress-proxy port, in proxy mode.
    proxy_port: Option<u16>,
}

/// The files outside tenant directories: platform, base root, overlays, flux.
fn shared_files(
    platform: &[Object],
    tenants: &[TenantEntry],
    options: &RenderOptions,
) -> Result<Files, Error> {
    let mut files = Files::new();
    let mut base_resources = vec!["platform".to_owned()];
    let mut platform_resources = Vec::new();
    for o in platform {
        let name = file_name(o);
        files.insert(format!("base/platform/{name}"), o.to_yaml());
        platform_resources.push(name);
    }
    files.insert(
        "base/platform/kustomization.yaml".into(),
        kustomization(json!({ "resources": platform_resources })),
    );
    base_resources.extend(tenants.iter().map(|t| format!("tenants/{}", t.name)));
    files.insert(
        "base/kustomization.yaml".into(),
        kustomization(json!({ "resources": base_resources })),
    );
    for env in &options.environments {
        overlay(&mut files, tenants, options, env);
    }
    flux(&mut files, options)?;
    Ok(files)
}

/// Every file of the tree, in memory.
pub fn files(rendered: &Rendered, options: &RenderOptions) -> Result<Files, Error> {
    let mut files = Files::new();
    for t in &rendered.tenants {
        files.extend(tenant_files(t, options));
    }
    let entries: Vec<TenantEntry> = rendered
        .tenants
        .iter()
        .map(|t| TenantEntry {
            name: t.tenant.clone(),
            proxy_port: t.proxy_port,
        })
        .collect();
    files.extend(shared_files(&rendered.platform, &entries, options)?);
    Ok(files)
}

fn overlay(files: &mut Files, tenants: &[TenantEntry], options: &RenderOptions, env: &Environment) {
    let dir = format!("overlays/{}", env.name);
    let target = json!({
        "kind": "Deployment",
        "labelSelector": format!("{}={}", MANAGED_BY.0, MANAGED_BY.1),
    });
    let mut patches = Vec::new();
    if let Some(n) = env.replicas {
        files.insert(
            format!("{dir}/replicas-patch.yaml"),
            yaml::to_string(&json!([{ "op": "replace", "path": "/spec/replicas", "value": n }])),
        );
        patches.push(json!({ "path": "replicas-patch.yaml", "target": target }));
    }
    if let Some(r) = &env.resources {
        files.insert(
            format!("{dir}/resources-patch.yaml"),
            yaml::to_string(&json!([{
                "op": "replace",
                "path": "/spec/template/spec/containers/0/resources",
                "value": {
                    "requests": { "cpu": r.cpu_request, "memory": r.memory_request },
                    "limits": { "cpu": r.cpu_limit, "memory": r.memory_limit },
                },
            }])),
        );
        patches.push(json!({ "path": "resources-patch.yaml", "target": target }));
    }
    let environment = Some((env.name.as_str(), env.proxy_address.as_deref()));
    let generators: Vec<Value> = tenants
        .iter()
        .filter_map(|t| Some((t, t.proxy_port?)))
        .map(|(t, port)| {
            json!({
                "name": EGRESS_CONFIG,
                "namespace": t.name.namespace(),
                "behavior": "replace",
                "literals": literals(&egress_literals(options, environment, port)),
            })
        })
        .collect();
    let mut k = json!({
        "resources": ["../../base"],
        "labels": [{ "pairs": { "palisade.io/environment": env.name }, "includeSelectors": false }],
    });
    if !patches.is_empty() {
        k["patches"] = Value::Array(patches);
    }
    if !generators.is_empty() {
        k["configMapGenerator"] = Value::Array(generators);
    }
    files.insert(format!("{dir}/kustomization.yaml"), kustomization(k));
}

/// `clusters/<env>/palisade/`: the `GitRepository` and the one Flux
/// `Kustomization` (kustomize.toolkit.fluxcd.io/v1: `interval`, `path`,
/// `prune`, `sourceRef` as in the v1.4.0 and v1.9.4 CRDs) that applies
/// `overlays/<env>`.
fn flux(files: &mut Files, options: &RenderOptions) -> Result<(), Error> {
    let Some(git) = &options.git else {
        return Ok(());
    };
    let labels = BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some("flux-system".into()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let repo = Object::new(&GitRepository {
        metadata: meta(&git.name),
        spec: GitRepositorySpec {
            interval: git.interval.clone(),
            url: git.url.clone(),
            git_ref: GitRef {
                branch: git.branch.clone(),
            },
        },
    })?
    .to_yaml();
    let root = match git.path.trim_end_matches('/') {
        "." | "" => ".".to_owned(),
        p => format!("./{}", p.trim_start_matches("./")),
    };
    for env in &options.environments {
        let dir = format!("{}/palisade", cluster_dir(env));
        let k = FluxKustomization {
            metadata: meta(&format!("{}-{}", git.name, env.name)),
            spec: FluxKustomizationSpec {
                interval: env.interval.clone(),
                path: format!("{root}/overlays/{}", env.name),
                prune: true,
                source_ref: SourceRef {
                    kind: "GitRepository".into(),
                    name: git.name.clone(),
                },
                timeout: env.timeout.clone(),
                retry_interval: env.retry_interval.clone(),
            },
        };
        files.insert(format!("{dir}/gitrepository.yaml"), repo.clone());
        files.insert(
            format!("{dir}/flux-kustomization.yaml"),
            Object::new(&k)?.to_yaml(),
        );
        files.insert(
            format!("{dir}/kustomization.yaml"),
            kustomization(json!({
                "resources": ["gitrepository.yaml", "flux-kustomization.yaml"],
            })),
        );
    }
    Ok(())
}

/// The directory one cluster of environment `env` bootstraps Flux from.
pub fn cluster_dir(env: &Environment) -> String {
    format!("clusters/{}", env.name)
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

enum Outcome {
    Added,
    Changed,
    Unchanged,
}

/// A file's content hash: SHA-256 of its bytes, in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Digest(String);

impl Digest {
    const PREFIX: &'static str = "sha256:";

    fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(bytes);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(Self::PREFIX.len() + 64);
        hex.push_str(Self::PREFIX);
        for b in hash {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Self(hex)
    }

    /// The hash of the file at `path` now, if it can be read.
    fn of_file(path: &Path) -> Option<Self> {
        fs::read(path).ok().map(|b| Self::of(&b))
    }

    fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix(Self::PREFIX)?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.into()))
    }
}

/// `.palisade-tree`: the Git source, the fingerprint of each tenant's
/// inputs, and the files the last write produced, each with the hash of
/// the bytes written.
///
/// ```text
/// source\t<url>\t<branch>\t<path>
/// tenant\t<name>\t<fingerprint>
/// <path>\tsha256:<hex>
/// ```
///
/// Only contents go in, never times or sizes on disk, so the same state
/// gives the same bytes in any clone. A file line in an older form (bare
/// path, or path with size and mtime) has no hash: its tenant is simply
/// rendered again.
#[derive(Debug, Default)]
struct Manifest {
    source: Option<(String, String, String)>,
    files: BTreeMap<String, Option<Digest>>,
    tenants: BTreeMap<String, String>,
}

impl Manifest {
    fn parse(text: &str) -> Self {
        let mut m = Self::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[..] {
                ["source", url, branch, path] => {
                    m.source = Some((url.into(), branch.into(), path.into()));
                }
                ["tenant", name, fp] => {
                    m.tenants.insert(name.to_owned(), fp.to_owned());
                }
                [path, ref rest @ ..] => {
                    let digest = match rest {
                        [d] => Digest::parse(d),
                        _ => None,
                    };
                    m.files.insert(path.to_owned(), digest);
                }
                [] => {}
            }
        }
        m
    }

    fn render(&self) -> String {
        let mut out = String::with_capacity(self.files.len() * 120);
        if let Some((url, branch, path)) = &self.source {
            out.push_str(&format!("source\t{url}\t{branch}\t{path}\n"));
        }
        for (name, fp) in &self.tenants {
            out.push_str(&format!("tenant\t{name}\t{fp}\n"));
        }
        for (path, digest) in &self.files {
            match digest {
                Some(d) => out.push_str(&format!("{path}\t{}\n", d.0)),
                None => out.push_str(&format!("{path}\n")),
            }
        }
        out
    }

    /// The files of tenant `name`'s directory, if every one still holds
    /// exactly the bytes written.
    fn intact_tenant_files(&self, root: &Path, name: &str) -> Option<Vec<(String, Digest)>> {
        let prefix = format!("base/tenants/{name}/");
        let mut out = Vec::new();
        for (path, digest) in self.files.range(prefix.clone()..) {
            if !path.starts_with(&prefix) {
                break;
            }
            let digest = digest.as_ref()?;
            if Digest::of_file(&root.join(path)).as_ref() != Some(digest) {
                return None;
            }
            out.push((path.clone(), digest.clone()));
        }
        (!out.is_empty()).then_some(out)
    }
}

fn source_line(g: &GitSource) -> (String, String, String) {
    (g.url.clone(), g.branch.clone(), g.path.clone())
}

/// The Git source the tree under `root` was last written with, from its
/// `.palisade-tree`: a re-render without `--git-url` keeps it.
pub fn recorded_source(root: &Path) -> Result<Option<GitSource>, Error> {
    let Some((url, branch, path)) = read_manifest(root)?.source else {
        return Ok(None);
    };
    GitSource::new(&url)
        .and_then(|g| g.with_branch(&branch))
        .and_then(|g| g.with_path(&path))
        .map(Some)
}

/// The previous write's manifest.
fn read_manifest(root: &Path) -> Result<Manifest, Error> {
    let manifest_path = root.join(MANIFEST);
    match fs::read_to_string(&manifest_path) {
        Ok(s) => Ok(Manifest::parse(&s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(io("read", &manifest_path)(e)),
    }
}

/// One file's fate in a write, with the hash of its bytes.
type FileOutcome = (String, Outcome, Option<Digest>);

/// Writes the files of one batch, each only if its bytes differ.
fn write_batch(root: &Path, files: &Files) -> Result<Vec<FileOutcome>, Error> {
    let dirs: BTreeSet<PathBuf> = files
        .keys()
        .filter_map(|rel| root.join(rel).parent().map(Path::to_owned))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).map_err(io("create", d))?;
    }
    files
        .iter()
        .map(|(rel, contents)| {
            let path = root.join(rel);
            let outcome = match fs::read(&path) {
                Ok(old) if old == contents.as_bytes() => Outcome::Unchanged,
                Ok(_) => Outcome::Changed,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Added,
                Err(e) => return Err(io("read", &path)(e)),
            };
            if !matches!(outcome, Outcome::Unchanged) {
                fs::write(&path, contents).map_err(io("write", &path))?;
            }
            Ok((rel.clone(), outcome, Some(Digest::of(contents.as_bytes()))))
        })
        .collect()
}

/// Tallies outcomes, removes files of the previous write that were not
/// written now, and records the new manifest (`next`, whose files this
/// fills in) if its bytes differ.
fn finish(
    root: &Path,
    previous: &Manifest,
    outcomes: Vec<FileOutcome>,
    mut next: Manifest,
) -> Result<TreeSummary, Error> {
    let manifest_path = root.join(MANIFEST);
    let mut summary = TreeSummary::default();
    for (rel, o, digest) in outcomes {
        match o {
            Outcome::Added => summary.added.push(rel.clone()),
            Outcome::Changed => summary.changed.push(rel.clone()),
            Outcome::Unchanged => summary.unchanged += 1,
        }
        next.files.insert(rel, digest);
    }
    summary.added.sort();
    summary.changed.sort();

    for rel in previous
        .files
        .keys()
        .filter(|p| !next.files.contains_key(*p))
    {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) || rel.starts_with('/') {
            return Err(Error::OutsideTree {
                manifest: manifest_path.clone(),
                entry: rel.clone(),
            });
        }
        let path = root.join(rel);
        match fs::remove_file(&path) {
            Ok(()) => summary.removed.push(rel.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
        let mut dir = path.parent();
        while let Some(d) = dir {
            // Stops at the first directory that is not empty (or the root).
            if d == root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    let text = next.render();
    if fs::read(&manifest_path).ok().as_deref() != Some(text.as_bytes()) {
        fs::write(&manifest_path, text).map_err(io("write", &manifest_path))?;
    }
    Ok(summary)
}

/// Writes `files` under `root`: only files whose bytes differ are written,
/// and files from the previous write that are no longer rendered are
/// removed (with directories left empty).
pub fn write_files(root: &Path, files: &Files) -> Result<TreeSummary, Error> {
    write_recorded(root, files, Manifest::default())
}

fn write_recorded(root: &Path, files: &Files, next: Manifest) -> Result<TreeSummary, Error> {
    fs::create_dir_all(root).map_err(io("create", root))?;
    let previous = read_manifest(root)?;
    let outcomes = write_batch(root, files)?;
    finish(root, &previous, outcomes, next)
}

/// Whether a write may trust what the previous one recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// Skip tenants whose inputs have the fingerprint recorded last time
    /// and whose files still hold the bytes written (content hashes).
    #[default]
    Unchanged,
    /// Render and compare every tenant.
    Nothing,
}

/// Renders `snapshot` straight into the tree under `root`, one tenant at a
/// time in parallel, so memory stays proportional to one tenant rather
/// than to the whole platform. Tenants whose inputs and files are as the
/// previous write left them are not rendered again.
pub fn write_snapshot(
    root: &Path,
    snapshot: &Snapshot,
    options: &RenderOptions,
) -> Result<TreeSummary, Error> {
    write_snapshot_with(root, snapshot, options, Reuse::default())
}

/// [`write_snapshot`], choosing what may be reused.
pub fn write_snapshot_with(
    root: &Path,
    snapshot: &Snapshot,
    options: &RenderOptions,
    reuse: Reuse,
) -> Result<TreeSummary, Error> {
    fs::create_dir_all(root).map_err(io("create", root))?;
    let previous = read_manifest(root)?;
    let renderer = Renderer::new(snapshot, options);
    let per_tenant = renderer.map_tenant_inputs(|t| {
        let name = t.name().to_string();
        let fingerprint = t.fingerprint();
        let reused = (reuse == Reuse::Unchanged
            && previous.tenants.get(&name) == Some(&fingerprint))
        .then(|| previous.intact_tenant_files(root, &name))
        .flatten();
        let outcomes = match reused {
            Some(files) => files
                .into_iter()
                .map(|(rel, digest)| (rel, Outcome::Unchanged, Some(digest)))
                .collect(),
            None => write_batch(root, &tenant_files(&t.render()?, options))?,
        };
        let entry = TenantEntry {
            name: t.name().clone(),
            proxy_port: t.proxy_port(),
        };
        Ok((entry, fingerprint, outcomes))
    })?;
    let mut outcomes = Vec::new();
    let mut entries = Vec::with_capacity(per_tenant.len());
    let mut fingerprints = BTreeMap::new();
    for (entry, fp, o) in per_tenant {
        fingerprints.insert(entry.name.to_string(), fp);
        entries.push(entry);
        outcomes.extend(o);
    }
    let shared = shared_files(&renderer.platform()?, &entries, options)?;
    outcomes.extend(write_batch(root, &shared)?);
    let next = Manifest {
        source: options.git.as_ref().map(source_line),
        tenants: fingerprints,
        files: BTreeMap::new(),
    };
    let summary = finish(root, &previous, outcomes, next)?;
    tracing::info!(
        root = %root.display(),
        added = summary.added.len(),
        changed = summary.changed.len(),
        removed = summary.removed.len(),
        unchanged = summary.unchanged,
        "wrote GitOps tree"
    );
    Ok(summary)
}

/// Renders the tree for `rendered` and writes it under `root`.
pub fn write_tree(
    root: &Path,
    rendered: &Rendered,
    options: &RenderOptions,
) -> Result<TreeSummary, Error> {
    let files = files(rendered, options)?;
    let next = Manifest {
        source: options.git.as_ref().map(source_line),
        ..Manifest::default()
    };
    let summary = write_recorded(root, &files, next)?;
    tracing::info!(
        root = %root.display(),
        added = summary.added.len(),
        changed = summary.changed.len(),
        removed = summary.removed.len(),
        unchanged = summary.unchanged,
        "wrote GitOps tree"
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_manifest_naming_a_file_outside_the_tree_is_refused_and_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(&root).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep me").unwrap();
        fs::write(root.join(MANIFEST), "../victim\n").unwrap();
        let e = write_files(&root, &Files::new()).unwrap_err();
        assert!(
            matches!(&e, Error::OutsideTree { entry, .. } if entry == "../victim"),
            "{e:?}"
        );
        assert!(e.to_string().ends_with("refusing to remove it"), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    }
}
