//! A small HTTP/1.1 client over the daemon's Unix socket (hyper), which starts the
//! daemon when nothing answers.

use anyhow::{anyhow, bail, Context, Result};
use deltabox_api as api;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

pub struct Client {
    pub socket: PathBuf,
}

/// An error the daemon returned, with its code and actionable message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.message, self.code)
    }
}
impl std::error::Error for ApiFailure {}

impl Client {
    async fn connect(&self) -> std::io::Result<UnixStream> {
        UnixStream::connect(&self.socket).await
    }

    /// Connects, starting `deltabox daemon` in the background if nothing listens.
    pub async fn ensure_daemon(&self, root: &Path) -> Result<()> {
        if self.connect().await.is_ok() {
            return Ok(());
        }
        std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
        let log = PathBuf::from(format!("{}.log", root.display()));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let exe = std::env::current_exe().context("find the deltabox binary")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("daemon")
            .env(api::SOCKET_ENV, &self.socket)
            .env(api::ROOT_ENV, root)
            .stdin(std::process::Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; it detaches the daemon from our session.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("start the deltabox daemon")?;
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if self.connect().await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(st)) = child.try_wait() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let last: Vec<&str> = tail.lines().rev().take(5).collect();
                bail!(
                    "the daemon exited at start ({st}); its log {} ends with:\n{}",
                    log.display(),
                    last.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "the daemon did not open {} within 15 s; see {}",
            self.socket.display(),
            log.display()
        )
    }

    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let stream = self.connect().await.with_context(|| {
            format!(
                "connect to the daemon at {} (is `deltabox daemon` running?)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the daemon")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://deltabox{path}"))
            .header("host", "deltabox")
            .header("content-type", "application/json")
            .body(Full::new(payload))?;
        let resp = sender
            .send_request(req)
            .await
            .context("request to the daemon")?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("read the daemon's answer")?
            .to_bytes();
        if !status.is_success() {
            let e: api::ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
                anyhow!(
                    "daemon answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })?;
            return Err(ApiFailure {
                status: status.as_u16(),
                code: e.error.code,
                message: e.error.message,
            }
            .into());
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "decode the daemon's answer: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }
}
