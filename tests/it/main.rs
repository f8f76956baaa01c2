//! End-to-end tests: a real Kafka-protocol broker (librdkafka's mock cluster), real RocksDB, the
//! pipeline in this process, `/metrics` scraped over HTTP.

mod support;

mod bank;
mod cli;
mod compression;
mod dashboards;
mod dead_letter;
mod demo;
mod deploy;
mod generate;
mod group;
mod kill;
mod partitions;
mod reports;
mod restart;
mod scenario;
mod schema_registry;
mod tls;
