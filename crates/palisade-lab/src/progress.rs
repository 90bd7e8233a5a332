//! Progress for `lab up`, `sync`, `down` and `verify`: a bar on a terminal,
//! plain lines otherwise (CI logs, pipes), never on stdout.

use crate::apply::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

/// Renders [`Progress`] events on stderr.
#[derive(Debug)]
pub struct Reporter {
    bar: Mutex<Option<ProgressBar>>,
    terminal: bool,
    quiet: bool,
}

impl Reporter {
    /// A reporter that draws bars when stderr is a terminal. `quiet` prints
    /// only notes.
    pub fn stderr(quiet: bool) -> Self {
        Self {
            bar: Mutex::new(None),
            terminal: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Handles one event.
    pub fn event(&self, p: Progress) {
        let Ok(mut bar) = self.bar.lock() else {
            return;
        };
        match p {
            Progress::Phase { name, total } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if self.quiet || total == 0 {
                    return;
                }
                if self.terminal {
                    let b =
                        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                    if let Ok(style) = ProgressStyle::with_template(
                        "{prefix:>14} [{bar:30}] {pos}/{len} {wide_msg}",
                    ) {
                        b.set_style(style.progress_chars("=> "));
                    }
                    b.set_prefix(name);
                    *bar = Some(b);
                } else {
                    eprintln!("{name}: {total} steps");
                }
            }
            Progress::Tick(msg) => match bar.as_ref() {
                Some(b) => {
                    b.inc(1);
                    b.set_message(msg);
                }
                None if !self.quiet && !self.terminal => eprintln!("  {msg}"),
                None => {}
            },
            Progress::Note(msg) => match bar.as_ref() {
                Some(b) => b.println(format!("note: {msg}")),
                None => eprintln!("note: {msg}"),
            },
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(b) = bar.take()
        {
            b.finish_and_clear();
        }
    }
}
