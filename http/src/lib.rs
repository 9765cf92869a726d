//! The HTTP serving loop shared by `provenixd` and `provenix substituter`.
//!
//! `axum::serve` has no bound on connections and no limit on how long a client may take to send
//! its request headers, so a handful of slow or idle clients can pin every file descriptor. This
//! loop adds both, and drains in-flight requests on shutdown:
//! - at most `max_connections` open connections; beyond that, new ones are closed at once;
//! - a client that has not sent a complete request head within `header_read_timeout` (also
//!   between requests on a kept-alive connection) is disconnected;
//! - on shutdown the listener closes, in-flight requests finish (up to `drain_timeout`).
//!
//! Request bodies and handler time are bounded by the application (body size limits and a
//! per-request timeout layer).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection limits.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest time to receive a complete request head.
    pub header_read_timeout: Duration,
    /// Longest time to wait for in-flight requests at shutdown.
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of what the loop refused (for metrics and tests).
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections closed because `max_connections` were open.
    pub refused: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
}

/// Serves `app` on an already-bound `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    stats: Arc<ServeStats>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn start(
        limits: ServeLimits,
    ) -> (String, Arc<ServeStats>, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let stats = Arc::new(ServeStats::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = stats.clone();
        tokio::spawn(serve(listener, app, limits, s, async move {
            let _ = rx.await;
        }));
        (addr.to_string(), stats, tx)
    }

    #[tokio::test]
    async fn a_client_that_dribbles_its_headers_is_cut_off_and_others_are_served() {
        let (addr, _, _stop) = start(ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServeLimits::default()
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // Meanwhile a normal client is served.
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), slow.read_to_end(&mut buf))
            .await
            .unwrap();
        // The server closed the connection (possibly after a 408) without serving the request.
        assert!(n.is_ok());
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused_and_the_slot_frees() {
        let (addr, stats, _stop) = start(ServeLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(30),
            ..ServeLimits::default()
        })
        .await;
        let a = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let b = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap_or(());
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "a third connection was served");
        assert!(stats.refused.load(Ordering::Relaxed) >= 1);
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
    }
}
