//! A TCP proxy on 127.0.0.1 in front of a database, for fault injection: it forwards
//! bytes both ways until told to cut every connection (and refuse new ones for a while),
//! or to drop the connection that carries the next N bytes towards the server, which lands
//! in the middle of whatever the client was doing (a deletion transaction, say).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy to one upstream address; dropping it closes every connection.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    upstream: String,
    refusing: AtomicBool,
    /// Bytes towards the server before the connection carrying them is dropped; < 0: off.
    budget: AtomicI64,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
    cuts: AtomicUsize,
}

impl Proxy {
    /// A proxy to `upstream` ("host:port").
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            refusing: AtomicBool::new(false),
            budget: AtomicI64::new(-1),
            cut: watch::channel(0).0,
            cuts: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.refusing.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                tokio::spawn(forward(client, accepting.clone()));
            }
        });
        Proxy {
            port,
            shared,
            accept,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.port)).unwrap();
        parsed.to_string()
    }

    /// Closes every open connection and refuses new ones for `outage`.
    pub async fn outage(&self, outage: Duration) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.cut_all();
        tokio::time::sleep(outage).await;
        self.shared.refusing.store(false, Ordering::SeqCst);
    }

    /// Drops the connection that carries the next `bytes` bytes towards the server.
    pub fn cut_after(&self, bytes: i64) {
        self.shared.budget.store(bytes, Ordering::SeqCst);
    }

    /// Whether the last `cut_after` has happened.
    pub fn cut_done(&self) -> bool {
        self.shared.budget.load(Ordering::SeqCst) < 0
    }

    /// Connections dropped so far by `cut_after` and `outage`.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    fn cut_all(&self) {
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        self.shared.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.cut_all();
    }
}

async fn forward(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut = shared.cut.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let before = shared.budget.load(Ordering::SeqCst);
            if before >= 0 {
                let left = shared.budget.fetch_sub(n as i64, Ordering::SeqCst) - n as i64;
                if left < 0 {
                    shared.budget.store(-1, Ordering::SeqCst);
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    return; // this connection is dropped with the request half sent
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut.changed() => {}
    }
}
