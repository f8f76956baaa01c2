//! A running deflect: the pipeline on its own thread, the HTTP server on a small tokio runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::pipeline::{self, Health, RunOptions, Summary};
use crate::{http, telemetry};

pub struct Service {
    addr: SocketAddr,
    cancel: Arc<AtomicBool>,
    pipeline: Option<JoinHandle<Result<Summary>>>,
    result: Option<Result<Summary>>,
    http_stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Service {
    /// Binds the HTTP address, then starts the pipeline thread.
    pub fn start(cfg: Config, opts: RunOptions) -> Result<Service> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("deflect-http")
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let listener = runtime.block_on(http::bind(&cfg.http.listen))?;
        let addr = listener.local_addr().context("listener address")?;
        let (recorder, handle) = telemetry::recorder();
        let health = Arc::new(Health {
            watermark_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            watermark_moved_ms: std::sync::atomic::AtomicI64::new(pipeline::now_ms()),
            watermark_stall_ms: std::sync::atomic::AtomicI64::new(
                cfg.http.ready_watermark_stall.as_millis() as i64,
            ),
            ..Default::default()
        });
        let (http_stop, stopped) = oneshot::channel::<()>();
        runtime.spawn(http::serve(
            listener,
            handle.clone(),
            health.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let cancel = Arc::new(AtomicBool::new(false));
        let c = cancel.clone();
        let pipeline = std::thread::Builder::new()
            .name("deflect-pipeline".into())
            .spawn(move || pipeline::run(&cfg, &c, &health, opts, &recorder))
            .context("cannot start the pipeline thread")?;
        Ok(Service {
            addr,
            cancel,
            pipeline: Some(pipeline),
            result: None,
            http_stop: Some(http_stop),
            runtime: Some(runtime),
            metrics: handle,
        })
    }

    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Prometheus text the HTTP server would serve now.
    pub fn render(&self) -> String {
        self.metrics.render()
    }

    pub fn pipeline_finished(&self) -> bool {
        self.pipeline.as_ref().is_none_or(|p| p.is_finished())
    }

    /// Waits for the pipeline to end by itself (exit at end of input, or an error); the HTTP server
    /// keeps serving until [`Service::shutdown`].
    pub fn wait_pipeline(&mut self) -> Result<Summary> {
        if let Some(p) = self.pipeline.take() {
            self.result = Some(
                p.join()
                    .map_err(|_| anyhow!("pipeline thread panicked"))
                    .and_then(|r| r),
            );
        }
        match self.result.as_ref().expect("joined above") {
            Ok(s) => Ok(s.clone()),
            Err(e) => Err(anyhow!("{}", crate::error_line(e))),
        }
    }

    /// Stops the pipeline after its current batch (state flushed, offsets committed) and the HTTP
    /// server.
    pub fn shutdown(mut self) -> Result<Summary> {
        self.cancel.store(true, Ordering::Relaxed);
        let r = self.wait_pipeline();
        if let Some(s) = self.http_stop.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
        r
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(p) = self.pipeline.take() {
            let _ = p.join();
        }
        if let Some(s) = self.http_stop.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
