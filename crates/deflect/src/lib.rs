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
pub mod telemetry;

pub use config::Config;
pub use pipeline::RunOptions;
pub use service::Service;
