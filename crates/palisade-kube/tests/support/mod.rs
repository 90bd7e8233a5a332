//! What the integration tests share about the tools they drive: where to
//! find them, and how a missing one is reported (loudly, and fatally under
//! `CI=true`, where scripts/test.sh installs every one).

#![allow(dead_code)]

pub mod model;

use std::path::{Path, PathBuf};

/// Whether this is a CI run, where no test may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports a missing tool: `SKIPPED: <why>` on stderr, a failure in CI.
pub fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    assert!(!in_ci(), "CI=true but a required tool is missing: {why}");
}

/// `name` from the validators' venv (`PALISADE_VENV`, else the one
/// scripts/test.sh makes under target/), else from `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("PALISADE_VENV") {
        candidates.push(PathBuf::from(venv).join("bin").join(name));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    candidates.push(manifest.join("../../target/venv-kube/bin").join(name));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file())
}
