//! `/metrics` (Prometheus text format), `/healthz` (alive) and `/readyz` (partitions assigned,
//! state restored, loop running).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::pipeline::{now_ms, Health};

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// Binds the listener (so the caller knows the address before serving).
pub async fn bind(addr: &str) -> Result<TcpListener> {
    let a: SocketAddr = addr
        .parse()
        .with_context(|| format!("http.listen {addr:?} is not host:port"))?;
    TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen on {a}"))
}

/// Serves until `shutdown` resolves; runs the exporter's upkeep meanwhile.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let upkeep = metrics.clone();
    let task = tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(5));
        loop {
            t.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AppState { metrics, health });
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    task.abort();
    r.context("http server failed")
}

async fn render(
    State(s): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

async fn ready(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.check(now_ms()) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", why.as_str()),
        ),
    }
}
