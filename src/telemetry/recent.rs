//! The last log lines of the process, kept in memory, for the operators'
//! `GET /api/logs/recent` and `GET /api/logs/download` (the routes of the
//! Node.js Maxine's log viewer).
//!
//! ```text
//!   tracing event -> (the log filter) -> RecentLayer: one line of text -> ring of the last N lines
//!                                                                           |
//!                                        /api/logs/recent, /download <- copy out (lock held for the copy)
//! ```
//!
//! The ring is bounded twice: in lines (the oldest falls out) and in bytes
//! per line (a longer line is cut), so it holds at most
//! `capacity * MAX_LINE_BYTES` of text whatever is logged. It sees what
//! passes the log filter (`log.level`), like the log itself.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How many lines the server keeps.
pub const DEFAULT_LINES: usize = 1000;
/// Longest line kept, in bytes; the rest of a longer one is cut off.
pub const MAX_LINE_BYTES: usize = 2048;

/// The ring of recent lines. Cloning copies an `Arc`; every clone (and
/// every [`RecentLayer`] made from one) shares the same lines.
#[derive(Clone)]
pub struct RecentLogs(Arc<Ring>);

struct Ring {
    capacity: usize,
    lines: Mutex<VecDeque<Box<str>>>,
}

impl fmt::Debug for RecentLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecentLogs")
            .field("capacity", &self.0.capacity)
            .field("lines", &self.guard().len())
            .finish()
    }
}

impl RecentLogs {
    /// A ring of at most `capacity` lines (at least one).
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Ring {
            capacity: capacity.max(1),
            lines: Mutex::new(VecDeque::new()),
        }))
    }

    /// The lock, even if a thread panicked while holding it: the ring is
    /// a list of finished strings, never left half-changed.
    fn guard(&self) -> MutexGuard<'_, VecDeque<Box<str>>> {
        self.0.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one line, cut to [`MAX_LINE_BYTES`]; the oldest falls out when
    /// the ring is full.
    pub fn push(&self, line: &str) {
        let line: Box<str> = cut(line).into();
        let mut lines = self.guard();
        if lines.len() == self.0.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The lines, oldest first, one per line of the text (no trailing
    /// newline; empty when there are none).
    pub fn text(&self) -> String {
        let lines = self.guard();
        let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(l);
        }
        out
    }

    /// How many lines are kept now.
    pub fn len(&self) -> usize {
        self.guard().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every line; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut lines = self.guard();
        let n = lines.len();
        lines.clear();
        n
    }

    /// The tracing layer that writes each event into this ring.
    pub fn layer(&self) -> RecentLayer {
        RecentLayer(self.clone())
    }
}

/// `line` cut to at most [`MAX_LINE_BYTES`] at a character boundary, with
/// `…` marking the cut.
fn cut(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE_BYTES {
        return line.into();
    }
    let mut end = MAX_LINE_BYTES - '…'.len_utf8();
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end]).into()
}

/// A `tracing_subscriber` layer that keeps each event as one line of a
/// [`RecentLogs`]. Install it beside the log's own output, under the same
/// filter.
pub struct RecentLayer(RecentLogs);

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.0.push(&format_line(SystemTime::now(), event));
    }
}

/// One event as a line: `2026-11-26T22:40:15.123Z  INFO maxine::app:
/// maxine is serving dns=127.0.0.1:53`, as the text log writes it. Line
/// breaks inside a message or field are written as `\n`, so one line of
/// the text is always one event.
fn format_line(now: SystemTime, event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut v = LineVisitor::default();
    event.record(&mut v);
    let mut line = format!(
        "{} {:>5} {}: {}{}",
        humantime::format_rfc3339_millis(now),
        meta.level(),
        meta.target(),
        v.message,
        v.fields
    );
    if line.contains(['\n', '\r']) {
        line = line.replace('\n', "\\n").replace('\r', "\\r");
    }
    line
}

/// Collects the message and the other fields of an event, each field as
/// ` name=value` (strings quoted, as the text log shows them).
#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_ring_keeps_the_last_lines_oldest_first() {
        let ring = RecentLogs::new(3);
        assert_eq!(ring.text(), "");
        for i in 1..=5 {
            ring.push(&format!("line {i}"));
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.text(), "line 3\nline 4\nline 5");
        assert_eq!(ring.clear(), 3);
        assert!(ring.is_empty());
        assert_eq!(ring.text(), "");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        let ring = RecentLogs::new(2);
        ring.push(&"é".repeat(MAX_LINE_BYTES));
        let text = ring.text();
        assert!(text.len() <= MAX_LINE_BYTES, "{}", text.len());
        assert!(text.ends_with("é…"), "{}", &text[text.len() - 8..]);
    }

    #[test]
    fn the_layer_writes_each_event_as_one_line_with_its_fields() {
        let ring = RecentLogs::new(10);
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            let addr = "127.0.0.1:53";
            tracing::info!(dns = %addr, name = "web", n = 3, "maxine is serving");
            tracing::warn!("two\nlines");
        });
        let text = ring.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        // 2026-11-26T22:40:15.123Z, then the level right-aligned in five.
        assert_eq!(lines[0].as_bytes()[23], b'Z', "{}", lines[0]);
        let after_time = &lines[0][24..];
        let target = module_path!();
        assert_eq!(
            after_time,
            format!("  INFO {target}: maxine is serving dns=127.0.0.1:53 name=\"web\" n=3")
        );
        assert!(lines[1].ends_with(&format!(" WARN {target}: two\\nlines")));
    }
}
