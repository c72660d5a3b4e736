//! Logs: text or JSON lines on stderr, levels from `log.level` (or `RUST_LOG`),
//! changeable while running through [`LogControl`] (the admin `/logging` endpoint).
//! The access log's lines are batched per runtime worker (`stderr.rs`).

mod stderr;

pub use stderr::{batch_this_thread, write_batch};

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use meshward_config::{LogConfig, LogFormat};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Whether the process logs JSON (set once, by [`init`]).
static STRUCTURED: AtomicBool = AtomicBool::new(false);

/// Whether lines are JSON, whose values must each be a field of their own; the
/// text format's lines may come as one message (as the access log's do).
pub(crate) fn structured() -> bool {
    STRUCTURED.load(Ordering::Relaxed)
}

/// Changes the filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Replaces the directives (e.g. `debug`, `info,access=off`).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| format!("{directives:?}: {e}"))?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }

    /// The directives in force.
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_default()
    }
}

/// Installs the process's subscriber; `None` when one is already installed.
pub fn init(config: &LogConfig) -> Option<LogControl> {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| config.level.clone());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("log level {directives:?} is invalid ({e}); using info");
        EnvFilter::new("info")
    });
    let (filter, handle) = reload::Layer::new(filter);
    STRUCTURED.store(config.format == LogFormat::Json, Ordering::Relaxed);
    let output = match config.format {
        // colours for a terminal only: log files and collectors get plain text,
        // whose fields are written without the styling machinery (it was a third
        // of an access log line's cost with every style empty)
        LogFormat::Text if std::io::stderr().is_terminal() => tracing_subscriber::fmt::layer()
            .with_writer(stderr::Stderr)
            .with_timer(SecondCachedTime)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(stderr::Stderr)
            .with_ansi(false)
            .with_timer(SecondCachedTime)
            .fmt_fields(PlainFields)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(stderr::Stderr)
            .with_timer(SecondCachedTime)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .ok()?;
    Some(LogControl { handle })
}

/// The default timestamp (RFC 3339, UTC, microseconds), its date and time of
/// day formatted once a second per thread, as Envoy's access log does: calendar
/// arithmetic and formatting were a quarter of an access log line's cost.
struct SecondCachedTime;

thread_local! {
    /// The second last formatted, and its text up to the `.`.
    static FORMATTED_SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for SecondCachedTime {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        let since_epoch = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        FORMATTED_SECOND.with_borrow_mut(|(second, text)| {
            if *second != since_epoch.as_secs() {
                let mut full = String::new();
                SystemTime.format_time(&mut Writer::new(&mut full))?;
                let whole = full.split_once('.').map_or(full.as_str(), |(s, _)| s);
                whole.clone_into(text);
                *second = since_epoch.as_secs();
            }
            write!(writer, "{text}.{:06}Z", since_epoch.subsec_micros())
        })
    }
}

/// The text format's fields as tracing-subscriber writes them without colours
/// (`name=value`, strings quoted and escaped, the message bare with terminal
/// control characters escaped), written directly.
struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message); false once
    /// a write failed.
    fn begin(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        let name = field.name();
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }

    fn value(&mut self, value: fmt::Arguments<'_>) {
        self.result = self.writer.write_fmt(value);
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.begin(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Escaping(&mut self.writer).write_str(value)
        } else {
            write_quoted(&mut self.writer, value)
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.begin(field) {
            self.value(format_args!("{value}"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.begin(field) {
            self.value(format_args!("{value}"));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.begin(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.begin(field) {
            self.result = write!(Escaping(&mut self.writer), "{value}");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.begin(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write!(Escaping(&mut self.writer), "{value:?}")
        } else {
            write!(self.writer, "{value:?}")
        };
    }
}

/// A string field's value in the text format: quoted and escaped as `Debug`
/// writes it (without its per-character escaping when nothing needs it).
pub(crate) fn write_quoted(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ')
    {
        out.write_char('"')?;
        out.write_str(value)?;
        out.write_char('"')
    } else {
        write!(out, "{value:?}")
    }
}

/// Writes through, escaping what a terminal would act on (as tracing-subscriber
/// does for messages) and line breaks: a message may carry text a client sent.
struct Escaping<'a, 'writer>(&'a mut Writer<'writer>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !may_hold_control(text.as_bytes()) {
            return self.0.write_str(text);
        }
        let mut rest = text;
        while let Some(at) = rest.find(is_terminal_control) {
            self.0.write_str(&rest[..at])?;
            let control = rest[at..].chars().next().unwrap_or_default();
            write!(self.0, "\\u{{{:x}}}", u32::from(control))?;
            rest = &rest[at + control.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Whether `text` may hold a terminal control; false means it holds none. Most
/// text holds none: bytes below a space and DEL are the C0 controls (and tab),
/// 0xC2 leads every C1 control (U+0080..U+009F). Eight bytes at a time (a byte
/// at a time, this was 3k instructions of an access log line).
fn may_hold_control(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // some byte of `word` is below `n` (n <= 128; exact as a yes or no)
    let any_below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0;
    let any_equal = |word: u64, b: u8| any_below(word ^ (ONES * u64::from(b)), 1);
    let mut words = text.chunks_exact(8);
    let found = words.by_ref().any(|chunk| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(bytes);
        any_below(word, b' ') || any_equal(word, 0x7f) || any_equal(word, 0xc2)
    });
    found
        || words
            .remainder()
            .iter()
            .any(|&b| b < b' ' || b == 0x7f || b == 0xc2)
}

/// The C0 controls but tab (a newline too: one event, one line, so a client
/// cannot forge the next), DEL and the C1 controls.
fn is_terminal_control(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// The text line of one event, as the daemon's text format writes it.
#[cfg(test)]
pub(crate) fn text_line_of(event: impl FnOnce()) -> String {
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut buffer) = self.0.lock() {
                buffer.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buffer.clone();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .fmt_fields(PlainFields)
        .with_writer(move || Sink(sink.clone()));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, event);
    let bytes = buffer.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: impl FnOnce()) -> String {
        text_line_of(event)
    }

    #[test]
    fn fields_read_as_the_default_format_without_colours() {
        let addr: std::net::SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let got = line(|| {
            tracing::info!(target: "access", src_addr = %addr, method = "GET", path = "/a b\"c", status = 200u16, took = 1.5f64, allowed = true, "allowed by {}", "ns/p");
        });
        assert_eq!(
            got,
            " INFO access: allowed by ns/p src_addr=10.0.0.1:8080 method=\"GET\" path=\"/a b\\\"c\" status=200 took=1.5 allowed=true\n"
        );
    }

    #[test]
    fn the_cached_timestamp_reads_as_the_default_one() {
        let format = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        // filled, then past the next second: a stale cached second fails
        for round in 0..2 {
            if round == 1 {
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            let (before, cached, after) = (
                format(&SystemTime),
                format(&SecondCachedTime),
                format(&SystemTime),
            );
            // 2026-12-05T02:39:15.123456Z, between the two default ones
            assert_eq!(
                cached.len(),
                "2026-12-05T02:39:15.123456Z".len(),
                "{cached}"
            );
            assert!(
                before <= cached && cached <= after,
                "{before} {cached} {after}"
            );
        }
    }

    #[test]
    fn a_control_is_found_at_every_place_of_a_word() {
        for len in 0..20 {
            let plain = vec![b'a'; len];
            assert!(!may_hold_control(&plain));
            for at in 0..len {
                for control in [0u8, b'\n', 0x1b, 0x1f, 0x7f, 0xc2] {
                    let mut text = plain.clone();
                    text[at] = control;
                    assert!(may_hold_control(&text), "{control:#x} at {at} of {len}");
                }
            }
        }
        // the bytes beside the controls are not taken for one
        let near: Vec<u8> = [b' ', b'~', 0x80, 0xc1, 0xc3, 0xff].repeat(3);
        assert!(!may_hold_control(&near));
    }

    #[test]
    fn a_message_cannot_drive_the_terminal() {
        let client_sent = "x\u{1b}[2Jy\u{9b}z\u{7}\n INFO forged";
        let got = line(|| tracing::info!("refused: {client_sent}"));
        assert_eq!(
            got,
            " INFO meshward_proxy::logging::tests: refused: x\\u{1b}[2Jy\\u{9b}z\\u{7}\\u{a} INFO forged\n"
        );
        // a string field is quoted and escaped as Debug does
        let got = line(|| tracing::info!(path = client_sent, "seen"));
        assert!(
            got.contains("path=\"x\\u{1b}[2Jy\\u{9b}z\\u{7}\\n INFO forged\""),
            "{got}"
        );
        // a C1 control alone (CSI, U+009B) is escaped too, with no C0 beside it
        let client_sent = "a\u{9b}31mb";
        let got = line(|| tracing::info!("refused: {client_sent}"));
        assert!(got.contains("refused: a\\u{9b}31mb\n"), "{got}");
    }
}
