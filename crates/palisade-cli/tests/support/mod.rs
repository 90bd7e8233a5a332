//! Runs the real `palisade` binary against a state file in a temp dir.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

#[derive(Debug)]
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "command failed: {}", self.stderr);
        self.stdout
    }

    /// Asserts a failure with a one-line error naming `needle`.
    #[track_caller]
    pub fn fails_with(self, needle: &str) {
        assert_ne!(
            self.code, 0,
            "command succeeded but should fail with {needle:?}: {}",
            self.stdout
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected a one-line error, got:\n{}",
            self.stderr
        );
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        assert!(
            lines[0].contains(needle),
            "expected {needle:?} in {:?}",
            lines[0]
        );
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        Self { dir, state }
    }

    /// A store with a pool and one deployment, `acme/web`.
    pub fn seeded() -> Self {
        let env = Self::new();
        env.run(&["init", "--pool", "fd00:9::/48"]).ok();
        env.run(&["create", "acme", "web", "nginx"]).ok();
        env
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("PALISADE_STATE")
            .arg("--state")
            .arg(&self.state);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.run(&all).ok()).unwrap()
    }

    /// Everything a user can read back, to prove a command changed nothing.
    pub fn observable(&self) -> String {
        ["list", "stats", "rules"]
            .iter()
            .map(|c| self.json(&[c]).to_string())
            .chain(std::iter::once(self.json(&["tenant", "list"]).to_string()))
            .chain(std::iter::once(self.json(&["gateway", "list"]).to_string()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn path(&self) -> &Path {
        &self.state
    }
}
