//! TLS as a secured cluster's clients use it: `deflect run` with `security.protocol=SSL` and the
//! cluster's CA (`ssl.ca.location`) against a TLS server (`openssl s_server` with a certificate
//! that CA signed for 127.0.0.1). No TLS Kafka broker runs here, so the server is not Kafka: the
//! test proves the handshake and the certificate check, not a Kafka session over TLS.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Runs `openssl` with `args` in `dir`, failing the test if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir` (`name.key`, `name.pem`).
fn ca(dir: &Path, name: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "1",
        ],
    );
}

/// The first line of `deflect run`'s errors against a TLS endpoint with `ca` as its CA file.
fn run_against(dir: &Path, port: u16, ca: &str) -> String {
    let mut cfg = config(
        &format!("127.0.0.1:{port}"),
        "tls-input",
        &dir.join(format!("state-{ca}")),
        "tls",
    );
    let props = &mut cfg.kafka.properties;
    props.insert("security.protocol".into(), "SSL".into());
    props.insert("ssl.ca.location".into(), dir.join(ca).display().to_string());
    let path = dir.join(format!("{ca}.toml"));
    std::fs::write(&path, cfg.to_toml()).unwrap();
    let out = Command::new(deflect_bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    stderr
        .lines()
        .find(|l| l.starts_with("deflect: error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
        .to_string()
}

#[test]
fn tls_handshake_with_the_clusters_ca_and_refusal_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "cluster-ca");
    ca(d, "other-ca");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "cluster-ca.pem",
            "-CAkey",
            "cluster-ca.key",
            "-CAcreateserial",
            "-out",
            "broker.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mut server, lines) = s_server(d, port);

    // the cluster's CA: the handshake completes (the server then gets Kafka requests it does
    // not answer, so the start-up check times out without a TLS error)
    let trusted = run_against(d, port, "cluster-ca.pem");
    let seen: Vec<String> = lines.try_iter().collect();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        seen.iter().any(|l| l.starts_with("CIPHER is")),
        "no TLS session completed: {seen:?}"
    );
    assert!(trusted.contains("cannot read topic"), "{trusted}");
    assert!(!trusted.contains("SSL"), "{trusted}");

    // another CA: the broker's certificate is refused, and the error line says so
    let (mut server, _lines) = s_server(d, port);
    let refused = run_against(d, port, "other-ca.pem");
    let _ = server.kill();
    let _ = server.wait();
    eprintln!("tls: trusted CA: {trusted}\ntls: other CA: {refused}");
    // librdkafka names the failure either way, depending on which report of it comes first:
    // `SSL handshake failed: … certificate verify failed`, or `Broker transport failure … certificate
    // verify failed (after 4ms in state SSL_HANDSHAKE)`
    assert!(
        refused.contains("certificate verify failed")
            && (refused.contains("SSL handshake failed") || refused.contains("SSL_HANDSHAKE")),
        "{refused}"
    );
}

/// `openssl s_server` on `port` with the broker's certificate, once it listens (it says ACCEPT),
/// and the lines of its output.
fn s_server(d: &Path, port: u16) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut server = Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-cert", "broker.pem", "-key", "broker.key"])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(server.stdout.take().unwrap());
    loop {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains("ACCEPT") => return (server, lines),
            Ok(_) => {}
            Err(_) => {
                let _ = server.kill();
                let _ = server.wait();
                panic!("openssl s_server did not start");
            }
        }
    }
}
