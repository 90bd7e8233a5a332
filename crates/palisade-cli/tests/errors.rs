//! Errors say their cause once: each library error's message says what
//! failed, its cause lives only in `#[source]`, and `palisade` prints the
//! chain once (`error: what failed: cause: its cause`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::Env;

/// The error line's `: `-separated parts, after asserting a one-line,
/// non-zero-exit error.
fn error_parts(run: support::Run) -> Vec<String> {
    assert_ne!(run.code, 0, "command should fail: {}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{}", run.stderr);
    let line = lines[0]
        .strip_prefix("error: ")
        .expect("starts with error:");
    line.split(": ").map(str::to_owned).collect()
}

/// No part of the chain is printed twice.
#[track_caller]
fn assert_each_part_once(parts: &[String]) {
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(p),
            "{p:?} is printed twice in {:?}",
            parts.join(": ")
        );
    }
}

#[test]
fn a_state_file_that_is_not_sqlite_names_its_cause_once() {
    let env = Env::new();
    std::fs::write(env.path(), "garbage\n").unwrap();
    let parts = error_parts(env.run(&["list"]));
    assert_eq!(parts[0], "failed to access the state database", "{parts:?}");
    // SQLITE_NOTADB's text, from SQLite's sqlite3ErrStr table
    // (https://www.sqlite.org/rescode.html#notadb): what SQLite said, once.
    let said = parts
        .iter()
        .filter(|p| p.as_str() == "file is not a database")
        .count();
    assert_eq!(said, 1, "{parts:?}");
    assert_each_part_once(&parts);
    assert_eq!(std::fs::read(env.path()).unwrap(), b"garbage\n");
}

#[test]
fn a_state_directory_that_cannot_be_created_names_the_os_error_once() {
    let mut env = Env::new();
    let file = env.dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    env.state = file.join("sub").join("state.db");
    let parts = error_parts(env.run(&["init", "--pool", "fd00:1::/48"]));
    assert!(
        parts[0].starts_with("failed to create the state directory "),
        "{parts:?}"
    );
    // ENOTDIR: a path component is a regular file (POSIX mkdir(2)).
    assert!(
        parts.iter().any(|p| p.starts_with("Not a directory")),
        "{parts:?}"
    );
    assert_each_part_once(&parts);
}
