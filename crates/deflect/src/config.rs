//! Typed configuration: one TOML file, environment overrides, validation that names the key.
//!
//! Every key has a default (see `Config::default` and the README). An environment variable
//! `DEFLECT__SECTION__KEY=value` overrides `section.key` (the value is read as a TOML value when it
//! parses as one, e.g. `15` or `true`, and as a string otherwise). Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deflect_core::dims::DimensionsConfig;
use deflect_core::engine::EngineConfig;
use deflect_core::journey::JourneyConfig;
use deflect_core::time::IntervalSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key {key}: {message}")]
    Key { key: String, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|(k, m)| format!("  {k}: {m}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<(String, String)>),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub site: SiteConfig,
    pub watermark: WatermarkConfig,
    pub journey: JourneySection,
    pub heatmap: HeatmapConfig,
    pub dimensions: DimensionsConfig,
    pub service: ServiceConfig,
    pub staffing: StaffingConfig,
    pub pipeline: PipelineConfig,
    pub limits: LimitsConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Records larger than this (bytes) are dead-lettered as `oversized`.
    pub max_record_bytes: usize,
    /// Events before this instant are dead-lettered as `timestamp_out_of_bounds`.
    pub min_event_time: jiff::Timestamp,
    /// Events further than this ahead of the wall clock are dead-lettered as
    /// `timestamp_out_of_bounds`.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Dead-letter records with a null or empty key as `missing_key`.
    pub require_key: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_record_bytes: 1 << 20,
            min_event_time: "1990-01-01T00:00:00Z".parse().expect("valid timestamp"),
            max_future: Duration::from_secs(86_400),
            require_key: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers` of the cluster.
    pub bootstrap_servers: String,
    /// Topic of contact events, keyed by customer.
    pub input_topic: String,
    /// Record format of the input topic: `auto`, `protobuf` or `json`.
    pub input_format: String,
    /// Consumer group.
    pub group_id: String,
    /// Partitions of the input topic this instance reads, assigned to it (no group membership,
    /// no rebalances; offsets still committed under `group_id`). Empty: the group assigns them
    /// (or `instances` does).
    pub partitions: Vec<i32>,
    /// With `instance_index`: this instance is one of `instances` that share the input's
    /// partitions by number (those where `partition % instances == instance_index`), each
    /// assigned them as with `partitions`. 0: off.
    pub instances: u32,
    /// This instance's number among `instances`, from 0 (a StatefulSet pod's index).
    pub instance_index: u32,
    /// Where records that cannot be used go, with the reason in headers; empty disables it.
    pub dead_letter_topic: String,
    /// Where events that arrive after their interval closed go (original bytes, reason in
    /// headers); empty disables it (they are still counted).
    pub late_topic: String,
    /// Where interval reports go; empty disables them.
    pub output_topic: String,
    /// Format of the interval reports: `protobuf` or `json`.
    pub output_format: String,
    /// Extra librdkafka properties for every client (security.protocol, sasl.*, …).
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The partitions of `topic`, an input of `count` partitions, this instance is assigned by
    /// configuration (`partitions`, or its share under `instances`); empty: the group assigns
    /// them. A listed partition the topic lacks, or an empty share, is an error naming the key.
    pub fn static_partitions(&self, count: i32) -> Result<Vec<i32>, ConfigError> {
        let key = |key: &str, message: String| ConfigError::Key {
            key: key.into(),
            message,
        };
        if self.instances == 0 {
            return match self.partitions.iter().find(|p| **p >= count) {
                Some(p) => Err(key(
                    "kafka.partitions",
                    format!(
                        "partition {p} is not in topic {:?}, which has {count} (0 to {})",
                        self.input_topic,
                        count - 1
                    ),
                )),
                None => Ok(self.partitions.clone()),
            };
        }
        let share: Vec<i32> = (0..count)
            .filter(|p| *p as u32 % self.instances == self.instance_index)
            .collect();
        if share.is_empty() {
            return Err(key(
                "kafka.instance_index",
                format!(
                    "instance {} of {} has no partition of topic {:?}, which has {count}: run at \
                     most {count} instances",
                    self.instance_index, self.instances, self.input_topic
                ),
            ));
        }
        Ok(share)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            input_topic: "contact-events".into(),
            input_format: "auto".into(),
            group_id: "deflect".into(),
            partitions: Vec::new(),
            instances: 0,
            instance_index: 0,
            dead_letter_topic: "deflect-dead-letter".into(),
            late_topic: "deflect-late-events".into(),
            output_topic: "deflect-interval-reports".into(),
            output_format: "protobuf".into(),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// RocksDB directory (created if missing).
    pub dir: PathBuf,
    /// Shared block cache of all column families, MiB.
    pub block_cache_mb: usize,
    /// Cap on all memtables together, MiB.
    pub write_buffer_mb: usize,
    /// fsync the write-ahead log on every batch (power-loss safety; slower).
    pub sync_writes: bool,
    /// Journeys kept decoded in memory per partition between batches.
    pub journey_cache_entries: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("deflect-state"),
            block_cache_mb: 128,
            write_buffer_mb: 64,
            sync_writes: false,
            journey_cache_entries: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// `/readyz` fails when the instance watermark has not advanced for this long (0s disables).
    #[serde(with = "humantime_serde")]
    pub ready_watermark_stall: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9898".into(),
            ready_watermark_stall: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    /// IANA time zone the intervals and the heat map are aligned to.
    pub time_zone: String,
    /// Interval length in minutes: 15, 30 or 60.
    pub interval_minutes: u32,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            time_zone: "UTC".into(),
            interval_minutes: 15,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkConfig {
    /// How long after its end an interval still accepts events.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Wall-clock silence after which a partition stops holding the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            grace: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JourneySection {
    /// A contact with no event for this long (event time) ends by timeout.
    #[serde(with = "humantime_serde")]
    pub contact_timeout: Duration,
    /// How long an ended contact's outcome is kept for surveys that refer to it (event time).
    #[serde(with = "humantime_serde")]
    pub survey_window: Duration,
    /// A requested callback still open after this long (event time) leaves the backlog as `lost`.
    #[serde(with = "humantime_serde")]
    pub callback_max_age: Duration,
    /// Proactive deflection window W: a notified customer who opens no potential call on the
    /// notification's topic within W was deflected.
    #[serde(with = "humantime_serde")]
    pub proactive_window: Duration,
    /// Intent labels whose deflection is counted apart (each must be in dimensions.intents).
    pub high_stakes_intents: Vec<String>,
}

impl Default for JourneySection {
    fn default() -> Self {
        JourneySection {
            contact_timeout: Duration::from_secs(4 * 3600),
            survey_window: Duration::from_secs(7 * 86_400),
            callback_max_age: Duration::from_secs(7 * 86_400),
            proactive_window: Duration::from_secs(86_400),
            high_stakes_intents: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Service-level threshold T: answered (or abandoned, or callback requested) within T.
    #[serde(with = "humantime_serde")]
    pub level_threshold: Duration,
    /// Abandons with a shorter wait are short abandons (reported apart).
    #[serde(with = "humantime_serde")]
    pub short_abandon: Duration,
    /// Count agent answers without a queue in ASA, with a wait of 0.
    pub asa_include_direct_answers: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            level_threshold: Duration::from_secs(20),
            short_abandon: Duration::from_secs(5),
            asa_include_direct_answers: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaffingConfig {
    /// Service-level target for the required agents (Erlang C), fraction answered within
    /// service.level_threshold.
    pub target: f64,
    /// Share of paid time agents are not available (breaks, training): scheduled staff =
    /// ceil(agents / (1 - shrinkage)).
    pub shrinkage: f64,
    /// Mean patience for the Erlang A abandonment estimate.
    #[serde(with = "humantime_serde")]
    pub mean_patience: Duration,
}

impl Default for StaffingConfig {
    fn default() -> Self {
        StaffingConfig {
            target: 0.8,
            shrinkage: 0.3,
            mean_patience: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeatmapConfig {
    /// Trailing range of local days the heat map covers.
    pub days: u32,
    /// Cell of the heat map: `hour` (weekday × hour, 168 cells) or `interval` (weekday × interval
    /// of the day: the series get a `minute` label).
    pub cell: String,
}

impl Default for HeatmapConfig {
    fn default() -> Self {
        HeatmapConfig {
            days: 28,
            cell: "hour".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Most records processed (and written in one RocksDB batch) per poll cycle.
    pub max_batch: usize,
    /// Longest wait for the first record of a batch.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch: 50_000,
            poll_timeout: Duration::from_millis(100),
        }
    }
}

const ENV_PREFIX: &str = "DEFLECT__";

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Config {
    /// Reads `path` (or only defaults when `None`), applies `DEFLECT__…` overrides from `env`,
    /// and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value = match path {
            Some(p) => {
                let shown = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: shown,
                        message: e.message().to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (k, v) in env {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let mut path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let parsed = if path.len() > 2 && path[..2] == ["kafka", "properties"] {
                // a librdkafka property: its name has dots, which environment variable names
                // cannot (`…__PROPERTIES__SASL_PASSWORD` is `sasl.password`), and a string value
                let name = path[2..].join(".").replace('_', ".");
                path.truncate(2);
                path.push(name);
                toml::Value::String(v)
            } else {
                format!("x = {v}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("x"))
                    .unwrap_or(toml::Value::String(v))
            };
            set_path(&mut value, &path, parsed).map_err(|message| ConfigError::Key {
                key: path.join("."),
                message,
            })?;
        }
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Key {
                    key,
                    message: e.into_inner().to_string(),
                }
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense, reporting every problem with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad = Vec::new();
        let mut check = |ok: bool, key: &str, msg: String| {
            if !ok {
                bad.push((key.to_string(), msg));
            }
        };
        check(
            !self.kafka.bootstrap_servers.trim().is_empty(),
            "kafka.bootstrap_servers",
            "must not be empty".into(),
        );
        check(
            !self.kafka.input_topic.trim().is_empty(),
            "kafka.input_topic",
            "must not be empty".into(),
        );
        check(
            !self.kafka.group_id.trim().is_empty(),
            "kafka.group_id",
            "must not be empty".into(),
        );
        let mut listed = std::collections::BTreeSet::new();
        for &p in &self.kafka.partitions {
            check(
                p >= 0,
                "kafka.partitions",
                format!("{p} is not a partition (partitions count from 0)"),
            );
            check(
                listed.insert(p),
                "kafka.partitions",
                format!("partition {p} is listed twice"),
            );
        }
        check(
            self.kafka.instances == 0 || self.kafka.partitions.is_empty(),
            "kafka.instances",
            "set kafka.partitions or kafka.instances, not both".into(),
        );
        check(
            self.kafka.instances > 0 || self.kafka.instance_index == 0,
            "kafka.instance_index",
            "needs kafka.instances".into(),
        );
        check(
            self.kafka.instances == 0 || self.kafka.instance_index < self.kafka.instances,
            "kafka.instance_index",
            format!(
                "must be below kafka.instances ({}), got {}",
                self.kafka.instances, self.kafka.instance_index
            ),
        );
        check(
            deflect_proto::Format::parse(&self.kafka.input_format).is_some(),
            "kafka.input_format",
            format!(
                "must be auto, protobuf or json, got {:?}",
                self.kafka.input_format
            ),
        );
        for (key, topic) in [
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
            ("kafka.late_topic", &self.kafka.late_topic),
            ("kafka.output_topic", &self.kafka.output_topic),
        ] {
            check(
                *topic != self.kafka.input_topic,
                key,
                "must differ from kafka.input_topic".into(),
            );
        }
        check(
            matches!(self.kafka.output_format.as_str(), "protobuf" | "json"),
            "kafka.output_format",
            format!(
                "must be protobuf or json, got {:?}",
                self.kafka.output_format
            ),
        );
        if let Err(e) = IntervalSpec::new(&self.site.time_zone, self.site.interval_minutes) {
            let key = match e {
                deflect_core::time::TimeError::BadLength(_) => "site.interval_minutes",
                deflect_core::time::TimeError::UnknownZone { .. } => "site.time_zone",
            };
            check(false, key, e.to_string());
        }
        check(
            self.state.block_cache_mb >= 8,
            "state.block_cache_mb",
            format!("must be at least 8, got {}", self.state.block_cache_mb),
        );
        check(
            self.state.write_buffer_mb >= 4,
            "state.write_buffer_mb",
            format!("must be at least 4, got {}", self.state.write_buffer_mb),
        );
        check(
            self.http.listen.parse::<std::net::SocketAddr>().is_ok(),
            "http.listen",
            format!(
                "must be host:port with an IP address, got {:?}",
                self.http.listen
            ),
        );
        check(
            self.watermark.idle_timeout >= Duration::from_millis(100),
            "watermark.idle_timeout",
            "must be at least 100ms".into(),
        );
        check(
            self.journey.contact_timeout >= Duration::from_secs(1),
            "journey.contact_timeout",
            "must be at least 1s".into(),
        );
        for (i, intent) in self.journey.high_stakes_intents.iter().enumerate() {
            check(
                self.dimensions.intents.contains(intent),
                &format!("journey.high_stakes_intents[{i}]"),
                format!("{intent:?} is not in dimensions.intents (it would be folded into other)"),
            );
        }
        for (key, d) in [
            ("journey.survey_window", self.journey.survey_window),
            ("journey.callback_max_age", self.journey.callback_max_age),
            ("journey.proactive_window", self.journey.proactive_window),
            ("service.level_threshold", self.service.level_threshold),
        ] {
            check(
                d >= Duration::from_secs(1),
                key,
                "must be at least 1s".into(),
            );
        }
        check(
            self.staffing.target > 0.0 && self.staffing.target < 1.0,
            "staffing.target",
            format!(
                "must be between 0 and 1 (exclusive), got {}",
                self.staffing.target
            ),
        );
        check(
            (0.0..0.95).contains(&self.staffing.shrinkage),
            "staffing.shrinkage",
            format!("must be in [0, 0.95), got {}", self.staffing.shrinkage),
        );
        check(
            matches!(self.heatmap.cell.as_str(), "hour" | "interval"),
            "heatmap.cell",
            format!("must be hour or interval, got {:?}", self.heatmap.cell),
        );
        check(
            (1..=366).contains(&self.heatmap.days),
            "heatmap.days",
            format!("must be 1..=366, got {}", self.heatmap.days),
        );
        check(
            self.pipeline.max_batch >= 1,
            "pipeline.max_batch",
            "must be at least 1".into(),
        );
        check(
            self.limits.max_record_bytes >= 64,
            "limits.max_record_bytes",
            format!("must be at least 64, got {}", self.limits.max_record_bytes),
        );
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(bad))
        }
    }

    /// The settings that shape the stored state (interval boundaries, heat-map cells): a state
    /// directory is refused when they change (`Store::check_settings`).
    pub fn state_settings(&self) -> String {
        format!(
            "site.time_zone={} site.interval_minutes={} heatmap.cell={}",
            self.site.time_zone, self.site.interval_minutes, self.heatmap.cell
        )
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            intervals: IntervalSpec::new(&self.site.time_zone, self.site.interval_minutes)
                .expect("validated"),
            grace_ms: self.watermark.grace.as_millis() as i64,
            idle_timeout_ms: self.watermark.idle_timeout.as_millis() as i64,
            heatmap_days: self.heatmap.days,
            heatmap_by_interval: self.heatmap.cell == "interval",
            journey: JourneyConfig {
                dims: self.dimensions.clone(),
                contact_timeout_ms: ms(self.journey.contact_timeout),
                survey_window_ms: ms(self.journey.survey_window),
                sl_threshold_ms: ms(self.service.level_threshold),
                short_abandon_ms: ms(self.service.short_abandon),
                asa_include_direct: self.service.asa_include_direct_answers,
                high_stakes_intents: self.journey.high_stakes_intents.clone(),
                proactive_window_ms: ms(self.journey.proactive_window),
                callback_max_age_ms: ms(self.journey.callback_max_age),
            },
        }
    }

    pub fn input_format(&self) -> deflect_proto::Format {
        deflect_proto::Format::parse(&self.kafka.input_format).expect("validated")
    }

    /// How the state store is opened: the RocksDB budget and write durability of `[state]`.
    pub fn store_options(&self) -> deflect_store::StoreOptions {
        deflect_store::StoreOptions {
            block_cache_bytes: self.state.block_cache_mb << 20,
            write_buffer_bytes: self.state.write_buffer_mb << 20,
            sync_writes: self.state.sync_writes,
        }
    }

    pub fn client_settings(&self) -> deflect_kafka::ClientSettings {
        deflect_kafka::ClientSettings {
            bootstrap_servers: self.kafka.bootstrap_servers.clone(),
            properties: self.kafka.properties.clone().into_iter().collect(),
        }
    }

    /// The effective configuration as TOML (what `deflect check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

fn set_path(t: &mut toml::Table, path: &[String], v: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            t.insert(last.clone(), v);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = t
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, v),
                _ => Err(format!("{first} is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(
            Some(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(load(&c.to_toml(), &[]).unwrap(), c);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load("[kafka]\nbootstrap = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafka") && e.contains("bootstrap"), "{e}");
        let e = load("[site]\ninterval_minutes = \"fifteen\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("site.interval_minutes"), "{e}");
    }

    #[test]
    fn bad_values_are_all_reported_with_keys() {
        let e = load("[site]\ntime_zone = \"Mars/Base\"\n[watermark]\ngrace = \"5m\"\nidle_timeout = \"1ms\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("site.time_zone") && e.contains("watermark.idle_timeout"),
            "{e}"
        );
        let e = load("[watermark]\ngrace = \"soon\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("watermark.grace"), "{e}");
    }

    #[test]
    fn environment_overrides_keys() {
        let c = load(
            "[site]\ninterval_minutes = 15\n",
            &[
                ("DEFLECT__SITE__INTERVAL_MINUTES", "30"),
                ("DEFLECT__KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.site.interval_minutes, 30);
        assert_eq!(c.kafka.bootstrap_servers, "10.0.0.1:9092");
        let e = load("", &[("DEFLECT__KAFKA__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    /// Static partitions: from the file or the environment (a TOML array), each a partition
    /// number listed once.
    #[test]
    fn static_partitions_are_checked() {
        let c = load("[kafka]\npartitions = [3, 1]\n", &[]).unwrap();
        assert_eq!(c.kafka.partitions, [3, 1]);
        let c = load("", &[("DEFLECT__KAFKA__PARTITIONS", "[0, 2]")]).unwrap();
        assert_eq!(c.kafka.partitions, [0, 2]);
        assert!(Config::default().kafka.partitions.is_empty());
        let e = load("[kafka]\npartitions = [1, -1, 1]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kafka.partitions: -1 is not a partition")
                && e.contains("kafka.partitions: partition 1 is listed twice"),
            "{e}"
        );
    }

    /// `instances` shares the partitions by number; with `partitions`, or an index out of
    /// range, it is refused naming the key.
    #[test]
    fn instances_share_the_partitions() {
        let c = load(
            "[kafka]\ninstances = 3\n",
            &[("DEFLECT__KAFKA__INSTANCE_INDEX", "1")],
        )
        .unwrap();
        assert_eq!(c.kafka.static_partitions(8).unwrap(), [1, 4, 7]);
        assert_eq!(
            c.kafka.static_partitions(1).unwrap_err().to_string(),
            "config key kafka.instance_index: instance 1 of 3 has no partition of topic \
             \"contact-events\", which has 1: run at most 1 instances"
        );
        let c = load("[kafka]\npartitions = [5, 2]\n", &[]).unwrap();
        assert_eq!(c.kafka.static_partitions(8).unwrap(), [5, 2]);
        assert_eq!(
            c.kafka.static_partitions(5).unwrap_err().to_string(),
            "config key kafka.partitions: partition 5 is not in topic \"contact-events\", which \
             has 5 (0 to 4)"
        );
        assert!(Config::default()
            .kafka
            .static_partitions(8)
            .unwrap()
            .is_empty());
        let e = load(
            "[kafka]\ninstances = 2\ninstance_index = 2\npartitions = [0]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("kafka.instances: set kafka.partitions or kafka.instances, not both")
                && e.contains("kafka.instance_index: must be below kafka.instances (2), got 2"),
            "{e}"
        );
        let e = load("[kafka]\ninstance_index = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kafka.instance_index: needs kafka.instances"),
            "{e}"
        );
    }

    /// librdkafka properties from the environment (a Kubernetes Secret): underscores and `__`
    /// are the property's dots, values stay strings, and the file's other properties stay.
    #[test]
    fn environment_sets_librdkafka_properties() {
        let c = load(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n",
            &[
                ("DEFLECT__KAFKA__PROPERTIES__SASL_PASSWORD", "s3cret=1"),
                ("DEFLECT__KAFKA__PROPERTIES__SASL__USERNAME", "deflect"),
                ("DEFLECT__KAFKA__PROPERTIES__MESSAGE_TIMEOUT_MS", "60000"),
            ],
        )
        .unwrap();
        let p = &c.kafka.properties;
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.password"], "s3cret=1");
        assert_eq!(p["sasl.username"], "deflect");
        assert_eq!(p["message.timeout.ms"], "60000");
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
