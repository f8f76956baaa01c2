//! Interval reports on the wire: protobuf (`proto/deflect/v1/reports.proto`) or JSON with the
//! same field names. Encoding is deterministic (series sorted by metric and labels), so the same
//! input yields byte-identical reports.

use deflect_core::engine::Report;
use deflect_core::time::IntervalSpec;
use prost::Message;
use serde_json::json;

use crate::pb;

/// The protobuf message of one report of input partition `partition`.
pub fn to_message(r: &Report, partition: i32, spec: &IntervalSpec) -> pb::IntervalReport {
    // Counters iterate in key order (metric, then labels): deterministic
    let series = r
        .counters
        .0
        .iter()
        .map(|(k, v)| pb::Series {
            metric: k.metric.name().to_string(),
            labels: k
                .metric
                .labels()
                .iter()
                .zip(k.labels.iter())
                .map(|(n, v)| pb::Label {
                    name: n.to_string(),
                    value: v.clone(),
                })
                .collect(),
            value: *v,
        })
        .collect();
    pb::IntervalReport {
        part: r.part.as_str().to_string(),
        partition,
        interval_start_ms: r.interval.start,
        interval_end_ms: r.interval.end,
        local_start: spec.format_local(r.interval.start),
        time_zone: spec.tz_name().to_string(),
        revision: r.revision,
        r#final: r.is_final,
        horizons_final: r.horizons_final.clone(),
        series,
        heat_arrivals: r.heat.arrivals,
        heat_answered: r.heat.answered,
        heat_wait_ms: r.heat.wait_ms,
    }
}

/// The record key: interval start (UTC, RFC 3339), part, partition.
pub fn key(r: &Report, partition: i32) -> String {
    let start = jiff::Timestamp::from_millisecond(r.interval.start)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| r.interval.start.to_string());
    format!("{start}/{}/p{partition}", r.part.as_str())
}

pub fn encode_protobuf(m: &pb::IntervalReport) -> Vec<u8> {
    m.encode_to_vec()
}

pub fn encode_json(m: &pb::IntervalReport) -> Vec<u8> {
    let series: Vec<serde_json::Value> = m
        .series
        .iter()
        .map(|s| {
            let labels: serde_json::Map<String, serde_json::Value> = s
                .labels
                .iter()
                .map(|l| (l.name.clone(), json!(l.value)))
                .collect();
            json!({"metric": s.metric, "labels": labels, "value": s.value})
        })
        .collect();
    let v = json!({
        "part": m.part,
        "partition": m.partition,
        "interval_start_ms": m.interval_start_ms,
        "interval_end_ms": m.interval_end_ms,
        "local_start": m.local_start,
        "time_zone": m.time_zone,
        "revision": m.revision,
        "final": m.r#final,
        "horizons_final": m.horizons_final,
        "series": series,
        "heat_arrivals": m.heat_arrivals,
        "heat_answered": m.heat_answered,
        "heat_wait_ms": m.heat_wait_ms,
    });
    serde_json::to_vec(&v).expect("a JSON value always serializes")
}

/// Decodes a protobuf report (consumers and tests).
pub fn decode_protobuf(bytes: &[u8]) -> Result<pb::IntervalReport, prost::DecodeError> {
    pb::IntervalReport::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deflect_core::engine::{HeatCell, ReportPart};
    use deflect_core::metrics::{Counters, Metric};
    use deflect_core::time::Interval;

    #[test]
    fn report_round_trips_and_encodes_deterministically() {
        let spec = IntervalSpec::new("Europe/London", 15).unwrap();
        let mut c = Counters::default();
        c.add(
            Metric::QueueAnswered,
            vec!["acme".into(), "voice".into(), "q1".into()],
            3,
        );
        c.add(
            Metric::PotentialCalls,
            vec!["acme".into(), "voice".into(), "none".into()],
            7,
        );
        let r = Report {
            interval: Interval {
                start: 1_711_846_800_000, // 2024-03-31T01:00Z, 02:00 BST
                end: 1_711_847_700_000,
            },
            part: ReportPart::Cohort,
            revision: 2,
            is_final: false,
            horizons_final: vec!["24h".into(), "72h".into()],
            counters: c.into(),
            heat: HeatCell::default(),
        };
        let m = to_message(&r, 3, &spec);
        assert_eq!(key(&r, 3), "2024-03-31T01:00:00Z/cohort/p3");
        assert_eq!(m.series[0].metric, "deflect_potential_calls_total");
        assert_eq!(m.local_start, spec.format_local(r.interval.start));
        let bytes = encode_protobuf(&m);
        assert_eq!(decode_protobuf(&bytes).unwrap(), m);
        assert_eq!(encode_protobuf(&to_message(&r, 3, &spec)), bytes);
        let j: serde_json::Value = serde_json::from_slice(&encode_json(&m)).unwrap();
        assert_eq!(j["series"][1]["labels"]["queue"], "q1");
        assert_eq!(j["revision"], 2);
        assert_eq!(j["final"], false);
    }
}
