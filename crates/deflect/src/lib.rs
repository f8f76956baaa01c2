//! deflect: contact-center call deflection analytics on Kafka, RocksDB and Prometheus.
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]. The pure logic lives in `deflect-core`;
//! this crate wires it to Kafka (`deflect-kafka`), RocksDB (`deflect-store`), configuration, the
//! HTTP surface, the traffic generator and the benchmark.

pub mod bench;
pub mod bench_state;
pub mod cli;
pub mod config;
pub mod generate;
pub mod http;
pub mod os;
pub mod pipeline;
pub mod produce;
pub mod replay;
pub mod service;
pub mod staffing;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use pipeline::RunOptions;
pub use service::Service;

/// The error and its causes on one line, `: `-separated, leaving out a cause whose text the line
/// already holds (messages that embed their source, as librdkafka's errors do theirs, would
/// otherwise repeat it once per level).
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("Flush error: OperationTimedOut (Local: Timed out)")]
        struct Inner(#[source] Code);
        #[derive(Debug, thiserror::Error)]
        #[error("OperationTimedOut (Local: Timed out)")]
        struct Code;
        #[derive(Debug, thiserror::Error)]
        #[error("kafka: {0}")]
        struct Outer(#[from] Inner);
        let e = anyhow::Error::new(Outer(Inner(Code)))
            .context("cannot deliver dead letters, late events or reports");
        assert_eq!(
            error_line(&e),
            "cannot deliver dead letters, late events or reports: kafka: Flush error: \
             OperationTimedOut (Local: Timed out)"
        );
        let e = anyhow::anyhow!("Not a directory").context("cannot create state directory /x");
        assert_eq!(
            error_line(&e),
            "cannot create state directory /x: Not a directory"
        );
    }
}
