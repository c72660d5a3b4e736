//! The log's writer: stderr, one `write` per line, except the access log's lines
//! on the runtime's worker threads, which are kept per thread and written
//! together when the thread goes idle.
//!
//! The access log has a line per HTTP request, and its `write` was a system call
//! per request (1.5-2 µs of the proxy's ~40 µs of CPU per HTTP/1.1 request in
//! `meshward-bench`). Envoy batches its access logs too (a buffer flushed by
//! size or every second); here a batch ends when its thread parks, so a line
//! waits only while its thread has other work ready, and an idle daemon holds
//! nothing back.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// A batch is written once it holds this much (a few dozen lines), so a worker
/// that stays busy for long still writes regularly, and a batch's buffer stays small.
const BATCH_BYTES: usize = 8 * 1024;

thread_local! {
    /// This thread's access lines not yet written; `None` on threads that write
    /// each line at once (all but the runtime's workers).
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// From now on this thread batches its access lines: for a runtime's worker
/// threads (`on_thread_start`), whose `on_thread_park` and `on_thread_stop` must
/// call [`write_batch`].
pub fn batch_this_thread() {
    BATCH.with_borrow_mut(|batch| {
        batch.get_or_insert_with(Vec::new);
    });
}

/// Writes this thread's batched lines (none when it does not batch).
pub fn write_batch() {
    BATCH.with_borrow_mut(|batch| {
        if let Some(lines) = batch {
            write_out(lines);
        }
    });
}

/// Writes and empties `lines`. A failed write drops them: stderr that cannot be
/// written must not grow the batch without bound, and the log has no other place.
fn write_out(lines: &mut Vec<u8>) {
    if !lines.is_empty() {
        let _ = io::stderr().write_all(lines);
        lines.clear();
    }
}

/// The `MakeWriter` of the fmt layer: each event's formatted line arrives in one
/// `write_all`.
pub(super) struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { access: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            access: meta.target() == "access",
        }
    }
}

/// One event's line on its way out.
pub(super) struct Line {
    access: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        BATCH.with_borrow_mut(|batch| match batch {
            Some(lines) if self.access => {
                lines.extend_from_slice(bytes);
                if lines.len() >= BATCH_BYTES {
                    write_out(lines);
                }
                Ok(bytes.len())
            }
            // any other line first writes the thread's batch: one thread's
            // lines keep their order
            Some(lines) => {
                write_out(lines);
                io::stderr().write(bytes)
            }
            None => io::stderr().write(bytes),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batched() -> usize {
        BATCH.with_borrow(|batch| batch.as_ref().map_or(0, Vec::len))
    }

    #[test]
    fn access_lines_wait_for_the_park_and_other_lines_write_them_first() {
        // the line of an event of this target, as `make_writer_for` makes it
        let meta = |target| Line {
            access: target == "access",
        };
        // a thread that does not batch keeps nothing
        meta("access").write_all(b"not batched\n").unwrap();
        assert_eq!(batched(), 0);

        batch_this_thread();
        meta("access").write_all(b"first\n").unwrap();
        meta("access").write_all(b"second\n").unwrap();
        assert_eq!(batched(), 13);
        // a warning from the same thread: the batch goes out before it
        meta("meshward_proxy").write_all(b"warn\n").unwrap();
        assert_eq!(batched(), 0);
        meta("access").write_all(b"third\n").unwrap();
        write_batch();
        assert_eq!(batched(), 0);
        // a busy thread writes a full batch without waiting for its park
        // (blanks: this goes to the test's real stderr)
        for _ in 0..=BATCH_BYTES / 100 {
            meta("access").write_all(&[b' '; 100]).unwrap();
        }
        assert!(batched() < 100, "{}", batched());
    }
}
