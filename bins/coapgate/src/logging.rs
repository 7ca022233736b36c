//! The binary's tracing subscriber.
//!
//! - Lines are written by a worker thread (`tracing-appender`'s non-blocking
//!   writer), never by the event loop; [`init`]'s guard flushes what is
//!   queued when it is dropped, at the end of `main`.
//! - Colour escape codes only when stderr is a terminal: a log file, a pipe
//!   or journald gets plain text.
//! - `RUST_LOG` filters (default `info`).
//! - The embedded broker's (rumqttd's) ERROR events for ordinary traffic
//!   count as debug events: see [`RumqttdNoise`].

use std::fmt;
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// The filter when `RUST_LOG` is unset or unreadable.
const DEFAULT_FILTER: &str = "info";

/// Keeps the log writer's worker alive; dropping it writes out every queued
/// line and reports lines the full queue had to drop.
pub struct Guard {
    worker: Option<WorkerGuard>,
    writer: NonBlocking,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Joins the worker after it wrote everything queued.
        drop(self.worker.take());
        let dropped = self.writer.error_counter().dropped_lines();
        if dropped > 0 {
            eprintln!("coapgate: {dropped} log lines were dropped (the log writer fell behind)");
        }
    }
}

/// Lines the log worker may fall behind before lines are dropped. The
/// queue is allocated whole at start (about 40 bytes a line), so
/// tracing-appender's default of 128 000 cost 5 MiB of RSS for nothing at
/// the default level; 16 384 lines are a fifth of a second of one debug
/// line per request at 80 000 requests/s.
const LOG_BUFFER_LINES: usize = 16_384;

/// Installs the subscriber for the process: stderr through a worker thread,
/// ANSI colours only on a terminal, `RUST_LOG` (default `info`).
pub fn init() -> Guard {
    let directives = std::env::var("RUST_LOG").unwrap_or_default();
    let (filter, directives) = match EnvFilter::try_new(&directives) {
        Ok(filter) if !directives.trim().is_empty() => (filter, directives),
        _ => (EnvFilter::new(DEFAULT_FILTER), DEFAULT_FILTER.to_owned()),
    };
    // Lossy: when the worker falls LOG_BUFFER_LINES behind, lines are
    // dropped (and counted) rather than the event loop waiting on stderr.
    let (writer, worker) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(true)
        .thread_name("coapgate-log")
        .finish(std::io::stderr());
    tracing_subscriber::registry()
        .with(filter)
        .with(RumqttdNoise::new(&directives))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(writer.clone()),
        )
        .init();
    Guard {
        worker: Some(worker),
        writer,
    }
}

/// Treats the ERROR events rumqttd (the embedded broker) logs for ordinary
/// traffic as debug events: they pass only where the `RUST_LOG` directives
/// enable DEBUG for their target (for example `RUST_LOG=info,rumqttd=debug`);
/// they still read `ERROR` then, as rumqttd wrote them. Every other rumqttd
/// event, ERROR included, passes as the filter says.
///
/// The ordinary ones (rumqttd 0.20), found by running the binary and
/// connecting and disconnecting `mosquitto_sub`:
///
/// | target | message | when |
/// |---|---|---|
/// | `rumqttd::server::broker` | `Error while handling MQTT connect packet`, error `ConnectionAborted` | a TCP connection closed before its CONNECT: the embedded broker's own readiness probe, health checks |
/// | `rumqttd::server::broker` | `router-drop`, error `Recv(Disconnected)` | a client sent DISCONNECT and the router let go of it |
/// | `rumqttd::server::broker` | `disconnected`, error `ConnectionReset` | a client's connection was reset (killed client, NAT timeout) |
/// | `rumqttd::router::routing` | `no-connection id N is already gone` | a DISCONNECT packet and the closed socket both reported the same client |
pub struct RumqttdNoise {
    /// The `RUST_LOG` directives as targets and levels, to ask whether a
    /// target is enabled at DEBUG; `None` when they do not parse as such
    /// (span or field directives): then the ordinary events stay hidden.
    debug: Option<Targets>,
}

impl RumqttdNoise {
    /// The layer for these `RUST_LOG` directives.
    pub fn new(directives: &str) -> Self {
        Self {
            debug: directives.parse().ok(),
        }
    }
}

impl<S: Subscriber> Layer<S> for RumqttdNoise {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with("rumqttd") {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if !is_ordinary(meta.target(), &fields.message, &fields.error) {
            return true;
        }
        self.debug
            .as_ref()
            .is_some_and(|targets| targets.would_enable(meta.target(), &Level::DEBUG))
    }
}

/// Whether a rumqttd ERROR event reports ordinary traffic (see
/// [`RumqttdNoise`]). `error` is the `Debug` text of its `error` field.
pub fn is_ordinary(target: &str, message: &str, error: &str) -> bool {
    match target {
        "rumqttd::server::broker" => match message {
            "Error while handling MQTT connect packet" => error.contains("ConnectionAborted"),
            "router-drop" => error == "Recv(Disconnected)",
            "disconnected" => error.contains("ConnectionReset"),
            _ => false,
        },
        "rumqttd::router::routing" => {
            message.starts_with("no-connection id ") && message.ends_with(" is already gone")
        }
        _ => false,
    }
}

/// The `message` and `error` fields of an event, as text.
#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => value.clone_into(&mut self.message),
            "error" => value.clone_into(&mut self.error),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = format!("{value:?}"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[test]
    fn the_ordinary_events_are_recognised_and_nothing_else() {
        let broker = "rumqttd::server::broker";
        let aborted = r#"Network(Io(Custom { kind: ConnectionAborted, error: "connection closed by peer" }))"#;
        assert!(is_ordinary(
            broker,
            "Error while handling MQTT connect packet",
            aborted
        ));
        assert!(!is_ordinary(
            broker,
            "Error while handling MQTT connect packet",
            "Network(NotConnectPacket(...))"
        ));
        assert!(is_ordinary(broker, "router-drop", "Recv(Disconnected)"));
        assert!(!is_ordinary(broker, "router-drop", "Send(Full)"));
        assert!(is_ordinary(
            broker,
            "disconnected",
            "Io(Os { code: 104, kind: ConnectionReset, message: \"Connection reset by peer\" })"
        ));
        assert!(!is_ordinary(broker, "disconnected", "Network(KeepAlive)"));
        assert!(!is_ordinary(
            broker,
            "Unable to accept socket.",
            "Os { code: 24 }"
        ));
        assert!(is_ordinary(
            "rumqttd::router::routing",
            "no-connection id 0 is already gone",
            ""
        ));
        assert!(!is_ordinary(
            "rumqttd::router::routing",
            "no space for new connection",
            ""
        ));
        assert!(!is_ordinary(
            "coapgate_mqtt::broker",
            "router-drop",
            "Recv(Disconnected)"
        ));
    }

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The log text of the same four events under these directives.
    fn log_with(directives: &str) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(directives))
            .with(RumqttdNoise::new(directives))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(out.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "rumqttd::server::broker", error = ?Disconnected, "router-drop");
            tracing::error!(target: "rumqttd::router::routing", "no-connection id {} is already gone", 3);
            tracing::error!(target: "rumqttd::router::routing", "no space for new connection");
            tracing::info!(target: "rumqttd::server::broker", "accept");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// Debug-prints as rumqttd's error does.
    struct Disconnected;
    impl fmt::Debug for Disconnected {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Recv(Disconnected)")
        }
    }

    #[test]
    fn ordinary_events_show_only_where_debug_is_on_real_errors_always() {
        let quiet = log_with("info");
        assert!(!quiet.contains("router-drop"), "{quiet}");
        assert!(!quiet.contains("already gone"), "{quiet}");
        assert!(
            quiet.contains("ERROR rumqttd::router::routing: no space for new connection"),
            "{quiet}"
        );
        assert!(quiet.contains("accept"), "{quiet}");

        for debug in ["debug", "info,rumqttd=debug", "warn,rumqttd::server=trace"] {
            let loud = log_with(debug);
            assert!(loud.contains("router-drop"), "{debug}: {loud}");
            assert!(
                loud.contains("no space for new connection"),
                "{debug}: {loud}"
            );
        }
        // Debug for rumqttd's broker module only: the router's stays hidden.
        let broker_only = log_with("info,rumqttd::server=debug");
        assert!(broker_only.contains("router-drop"), "{broker_only}");
        assert!(!broker_only.contains("already gone"), "{broker_only}");
    }
}
