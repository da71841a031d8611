//! The DeltaBox daemon: owns the sandboxes (they are processes: something must hold
//! them) and serves the HTTP/JSON API of `openapi.yaml` on a Unix socket.

mod routes;

pub use routes::router;

use deltabox_sandbox::{Manager, Paths};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another daemon already serves the layer store {0} (its lock is held); stop it first or use another DELTABOX_ROOT")]
    AlreadyRunning(PathBuf),
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sandbox(#[from] deltabox_sandbox::SandboxError),
    #[error("{0}")]
    Io(String),
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub init_exe: PathBuf,
}

/// Holds the store's lock file for the daemon's lifetime: two daemons on one store would
/// each believe they own its sandboxes.
fn lock_store(root: &Path) -> Result<std::fs::File, DaemonError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(root)
        .map_err(|e| DaemonError::Io(format!("create {}: {e}", root.display())))?;
    let f = std::fs::File::create(root.join("daemon.lock"))
        .map_err(|e| DaemonError::Io(format!("lock file: {e}")))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DaemonError::AlreadyRunning(root.to_path_buf()));
    }
    Ok(f)
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    let image_bytes = std::env::var("DELTABOX_STORE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(deltabox_sandbox::storefs::DEFAULT_IMAGE_BYTES);
    let how = deltabox_sandbox::storefs::prepare(&cfg.root, image_bytes)?;
    tracing::info!("{how}");
    let _lock = lock_store(&cfg.root)?;
    let sock_dir = cfg.socket.parent().unwrap_or(Path::new("/")).to_path_buf();
    let paths = Paths {
        root: cfg.root.clone(),
        init_exe: cfg.init_exe.clone(),
        hidden: vec![sock_dir.clone()],
    };
    let manager = tokio::task::spawn_blocking(move || Manager::open(paths))
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??;
    let manager = Arc::new(manager);

    std::fs::create_dir_all(&sock_dir).map_err(|e| DaemonError::Socket {
        path: sock_dir.clone(),
        source: e,
    })?;
    let _ = std::fs::remove_file(&cfg.socket);
    let listener =
        tokio::net::UnixListener::bind(&cfg.socket).map_err(|e| DaemonError::Socket {
            path: cfg.socket.clone(),
            source: e,
        })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600));
    tracing::info!(socket = %cfg.socket.display(), root = %cfg.root.display(), "deltabox daemon listening");

    // Records are safe against a daemon crash once written; flush them for power loss.
    let m2 = manager.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let m = m2.clone();
            let _ = tokio::task::spawn_blocking(move || m.store().sync()).await;
        }
    });

    // Leases: a sandbox leased to a process goes when the process does.
    let m3 = manager.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let m = m3.clone();
            let _ = tokio::task::spawn_blocking(move || m.reap_orphans()).await;
        }
    });

    // Warm pools fill in the background, one child at a time.
    let m4 = manager.clone();
    tokio::spawn(async move {
        loop {
            let m = m4.clone();
            let worked = tokio::task::spawn_blocking(move || m.refill_pools())
                .await
                .unwrap_or(false);
            if !worked {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    });

    let app = router(manager.clone(), cfg.root.clone());
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| DaemonError::Io(format!("serve: {e}")))?;
    let m = manager.clone();
    let _ = tokio::task::spawn_blocking(move || m.shutdown()).await;
    manager.store().sync();
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}
