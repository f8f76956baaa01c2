//! The deploy package is consistent: the configurations it ships are valid deflect configurations,
//! and the files its manifests mount exist.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Loads a TOML text the way `deflect run --config` does.
fn load(text: &str) -> deflect::Config {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("deflect.toml");
    std::fs::write(&f, text).unwrap();
    deflect::Config::load(Some(&f), Vec::<(String, String)>::new())
        .unwrap_or_else(|e| panic!("shipped configuration is invalid: {e}"))
}

#[test]
fn shipped_configurations_are_valid() {
    let compose = std::fs::read_to_string(repo().join("deploy/compose/deflect.toml")).unwrap();
    let c = load(&compose);
    assert_eq!(c.kafka.bootstrap_servers, "kafka:9092");

    // the ConfigMap's deflect.toml: the indented block after `deflect.toml: |`
    let cm = std::fs::read_to_string(repo().join("deploy/k8s/configmap.yaml")).unwrap();
    let body: Vec<&str> = cm
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("deflect.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    assert!(body.len() > 10, "configmap block not found");
    let c = load(&body.join("\n"));
    assert_eq!(c.journey.high_stakes_intents, ["dispute"]);

    // with the StatefulSet's DEFLECT__ variables (the pod index taken from its label: 0), and
    // one instance per replica
    let sts = std::fs::read_to_string(repo().join("deploy/k8s/statefulset.yaml")).unwrap();
    let lines: Vec<&str> = sts.lines().map(str::trim).collect();
    let mut env = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.strip_prefix("- name: DEFLECT__") else {
            continue;
        };
        let value = match lines[i + 1].strip_prefix("value: ") {
            Some(v) => v.trim_matches('"').to_string(),
            None => {
                assert!(
                    lines[i + 2].contains("apps.kubernetes.io/pod-index"),
                    "{name}"
                );
                "0".to_string()
            }
        };
        env.push((format!("DEFLECT__{name}"), value));
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("deflect.toml");
    std::fs::write(&f, body.join("\n")).unwrap();
    let c = deflect::Config::load(Some(&f), env.clone())
        .unwrap_or_else(|e| panic!("the StatefulSet's configuration is invalid: {e} ({env:?})"));
    let replicas: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("replicas: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(c.kafka.instances, replicas, "DEFLECT__KAFKA__INSTANCES");
    assert_eq!(c.state.dir, Path::new("/var/lib/deflect/state"));
}

#[test]
fn manifests_mount_files_that_exist_and_probe_the_real_endpoints() {
    let compose = std::fs::read_to_string(repo().join("deploy/compose/compose.yaml")).unwrap();
    for line in compose.lines().map(str::trim) {
        if let Some(rest) = line
            .strip_prefix("- ./")
            .or_else(|| line.strip_prefix("- ../"))
        {
            let rel = if line.starts_with("- ./") {
                format!("deploy/compose/{}", rest.split(':').next().unwrap())
            } else {
                format!("deploy/{}", rest.split(':').next().unwrap())
            };
            assert!(repo().join(&rel).exists(), "compose mounts missing {rel}");
        }
    }
    let sts = std::fs::read_to_string(repo().join("deploy/k8s/statefulset.yaml")).unwrap();
    assert!(sts.contains("path: /readyz") && sts.contains("path: /healthz"));
    assert!(sts.contains("volumeClaimTemplates"));
    let k = std::fs::read_to_string(repo().join("deploy/k8s/kustomization.yaml")).unwrap();
    for f in k.lines().filter_map(|l| l.trim().strip_prefix("- ")) {
        assert!(
            repo().join("deploy/k8s").join(f).exists(),
            "kustomization lists missing {f}"
        );
    }
}
