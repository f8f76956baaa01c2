//! `deflect demo` as a user runs it (`make demo`): its own process with the embedded broker and
//! synthetic traffic. Within a minute `/metrics` shows deflection, containment and ASA series;
//! Ctrl-C (SIGINT) stops it cleanly and removes the temporary state it made.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn demo_shows_business_series_within_a_minute_and_stops_on_ctrl_c() {
    // a free port (the demo prints the address it was given)
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(deflect_bin())
        .args(["demo", "--listen", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // its state directory, from what it prints ("deflect demo: state in DIR")
    let lines = lines_of(child.stdout.take().unwrap());
    let state = loop {
        let line = (lines.recv_timeout(Duration::from_secs(30).saturating_sub(started.elapsed())))
            .expect("state dir printed");
        if let Some(dir) = line.strip_prefix("deflect demo: state in ") {
            break PathBuf::from(dir);
        }
    };

    let figures = |m: &std::collections::BTreeMap<String, f64>| {
        [
            sum(
                m,
                "deflect_contact_outcomes_total",
                &[("outcome", "deflected")],
            ),
            sum(m, "deflect_containment_total", &[("window", "24h")]),
            sum(m, "deflect_queue_answered_total", &[]),
            sum(m, "deflect_queue_answered_wait_milliseconds_total", &[]),
        ]
    };
    let mut last = [0.0; 4];
    loop {
        if TcpStream::connect(addr).is_ok() {
            let (status, body) = http_get(addr, "/metrics");
            assert_eq!(status, 200);
            last = figures(&parse_metrics(&body, "deflect_"));
            if last.iter().all(|v| *v > 0.0) {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "after a minute: deflected, contained or re-contacted within 24 h, answered, \
             answered wait = {last:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "demo: business series after {} ms: {last:?}",
        started.elapsed().as_millis()
    );
    assert!(state.exists(), "{}", state.display());

    let (status, took) = stop(&mut child, "INT", Duration::from_secs(30));
    eprintln!("demo: exited {status} {} ms after Ctrl-C", took.as_millis());
    assert!(status.success(), "exit status after SIGINT: {status}");
    assert!(
        !state.exists(),
        "the demo's temporary state is left behind: {}",
        state.display()
    );
}
