//! Progress bars of the long CLI commands (`snapshot save`, `snapshot
//! restore`), drawn on stderr only when stderr is a terminal: scripts,
//! pipes and tests see the plain output alone.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

fn shown() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar of bytes (`len` known) or a spinner counting them.
pub fn bytes(what: &str, len: Option<u64>) -> ProgressBar {
    if !shown() {
        return ProgressBar::hidden();
    }
    let (pb, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {bytes} ({bytes_per_sec})",
        ),
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A bar of `len` records.
pub fn records(what: &str, len: u64) -> ProgressBar {
    if !shown() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} records ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A spinner for a step of unknown length.
pub fn spinner(what: &str) -> ProgressBar {
    if !shown() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
