//! `palisade list | head` closes stdout while the command still writes.
//! Like other Unix tools the command then ends quietly with the status a
//! shell reports for a SIGPIPE death: 128 + 13 = 141 (bash manual, "Exit
//! Status": "When a command terminates on a fatal signal whose number is N,
//! Bash uses the value 128+N as the exit status"; SIGPIPE is 13 in
//! signal(7)). No panic message, no error line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::Env;

/// Runs `cmd`, reads its first line, closes the pipe, and returns the exit
/// code and stderr.
fn read_one_line_then_close(mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "no output before the pipe closed");
    // The reader is dropped here: the rest of the output has nowhere to go.
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_a_listing_quietly_with_the_sigpipe_status() {
    let env = Env::new();
    env.run(&["init", "--pool", "fd00:77::/48", "--prefix-len", "64"])
        .ok();
    // Far more than a pipe buffer (64 KiB on Linux, pipe(7)) of output.
    let batch: String = (0..3000)
        .map(|i| {
            format!(
                "- {{tenant: t{}, name: d{i}, image: nginx:alpine}}\n",
                i % 7
            )
        })
        .collect();
    let file = env.dir.path().join("batch.yaml");
    std::fs::write(&file, batch).unwrap();
    env.run(&["import", file.to_str().unwrap()]).ok();

    for args in [
        &["list"][..],
        &["-o", "json", "list"],
        &["-o", "yaml", "list"],
    ] {
        let mut cmd = env.cmd();
        cmd.args(args);
        let (code, stderr) = read_one_line_then_close(cmd);
        assert_eq!(code, Some(141), "{args:?}: stderr {stderr}");
        assert_eq!(stderr, "", "{args:?} printed on stderr");
    }
}

#[test]
fn a_closed_stdout_ends_completions_quietly_with_the_sigpipe_status() {
    let mut cmd = Command::new(support::BIN);
    cmd.args(["completions", "bash"]);
    let (code, stderr) = read_one_line_then_close(cmd);
    assert_eq!(code, Some(141), "stderr {stderr}");
    assert_eq!(stderr, "");
}
