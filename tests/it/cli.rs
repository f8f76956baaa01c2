//! `deflect check-config` as a user runs it: the effective configuration with the environment's
//! overrides, and a bad configuration refused with exit status 2, a line naming each bad key.

use crate::support::*;

fn check_config(file: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    run_deflect(&["check-config".as_ref(), file.as_os_str()], env)
}

#[test]
fn check_config_prints_the_effective_configuration_or_names_the_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[site]\ntime_zone = \"Europe/Paris\"\n").unwrap();
    let (code, out, err) = check_config(&good, &[("DEFLECT__PIPELINE__MAX_BATCH", "1234")]);
    assert_eq!(code, 0, "{err}");
    let effective: toml::Table = out.parse().unwrap();
    assert_eq!(
        effective["site"]["time_zone"].as_str(),
        Some("Europe/Paris")
    );
    assert_eq!(effective["pipeline"]["max_batch"].as_integer(), Some(1234));
    // defaults filled in
    assert_eq!(effective["site"]["interval_minutes"].as_integer(), Some(15));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[site]\ntime_zone = \"Mars/Base\"\n[watermark]\nidle_timeout = \"1ms\"\n",
    )
    .unwrap();
    let (code, out, err) = check_config(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    // a headline, then a line per bad key with its problem
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("deflect: error: "), "{err}");
    assert!(
        lines[1].contains("site.time_zone") && lines[1].contains("Mars/Base"),
        "{err}"
    );
    assert!(lines[2].contains("watermark.idle_timeout"), "{err}");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[pipeline]\nmax_bacth = 10\n").unwrap();
    let (code, _, err) = check_config(&unknown, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max_bacth"), "{err}");
}

/// `deflect bench` as the README runs it, small: each measurement (the two raw consumers, the
/// pipeline to the very end, the floor) fails the command unless it read every record produced,
/// and each prints its line. Rates are not asserted: a benchmark, not a timed test.
#[test]
fn bench_reads_every_record_with_each_consumer() {
    let args = [
        "bench",
        "--events",
        "20000",
        "--partitions",
        "4",
        "--runs",
        "2",
        "--floor",
    ];
    let (code, out, err) = run_deflect(&args, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    for run in ["run 1 ", "run 2 "] {
        assert_eq!(
            out.lines().filter(|l| l.starts_with(run)).count(),
            1,
            "{out}"
        );
    }
    assert_eq!(
        out.lines()
            .filter(|l| l.trim_start().starts_with("floor "))
            .count(),
        3,
        "a floor line per run and the medians' one: {out}"
    );
    for line in [
        "events            20000",
        "raw consumer ",
        "deflect pipeline ",
        "to the very end ",
        "cpu per record ",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(line)),
            "no {line:?} in {out}"
        );
    }
}
