//! HTTP routes: thin translations between JSON and [`Manager`] calls, which block and so
//! run on tokio's blocking pool.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deltabox_api as api;
use deltabox_sandbox::{ExecOptions, Manager, SandboxError, StoreError};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
struct AppState {
    manager: Arc<Manager>,
    root: PathBuf,
}

pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = api::ErrorBody {
            error: api::ErrorDetail {
                code: self.1.into(),
                message: self.2,
            },
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            SandboxError::Store(StoreError::NotFound { .. }) => (S::NOT_FOUND, "not_found"),
            SandboxError::Store(StoreError::InvalidId { .. }) => (S::BAD_REQUEST, "invalid_id"),
            SandboxError::Store(StoreError::CheckpointRemoved(_)) | SandboxError::Removed(_) => {
                (S::GONE, "removed")
            }
            SandboxError::Store(StoreError::NoSpace { .. }) => {
                (S::INSUFFICIENT_STORAGE, "no_space")
            }
            SandboxError::Store(StoreError::DifferentBases { .. })
            | SandboxError::BadCommand(_)
            | SandboxError::BadBase { .. }
            | SandboxError::BadOwner(_) => (S::BAD_REQUEST, "bad_request"),
            SandboxError::Dead { .. } => (S::CONFLICT, "dead"),
            SandboxError::BackgroundProcesses { .. } => (S::CONFLICT, "busy"),
            SandboxError::NotCapturable { .. } => (S::CONFLICT, "not_capturable"),
            SandboxError::NoTemplate { .. } | SandboxError::NoTemplateToFork { .. } => {
                (S::CONFLICT, "no_template")
            }
            SandboxError::Io(m) if m.contains("No space left") => {
                (S::INSUFFICIENT_STORAGE, "no_space")
            }
            SandboxError::Sys { source, .. } if source.errno() == Some(libc::ENOSPC) => {
                (S::INSUFFICIENT_STORAGE, "no_space")
            }
            _ => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError(status, code, e.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn blocking<T: Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map(Json).map_err(ApiError::from),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("operation panicked: {e}"),
        )),
    }
}

pub fn router(manager: Arc<Manager>, root: PathBuf) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/doctor", get(doctor))
        .route("/v1/usage", get(usage))
        .route("/v1/sandboxes", get(list).post(create))
        .route("/v1/sandboxes/{id}", get(get_sandbox).delete(remove))
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/checkpoints", post(checkpoint))
        .route("/v1/sandboxes/{id}/restore", post(restore))
        .route("/v1/sandboxes/{id}/tree", get(tree))
        .route(
            "/v1/checkpoints/{id}",
            get(get_checkpoint).delete(remove_checkpoint),
        )
        .route("/v1/checkpoints/{id}/fork", post(fork))
        .route("/v1/checkpoints/{id}/pool", post(pool))
        .route("/v1/diff", get(diff))
        .route("/v1/gc", post(gc))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API route; see openapi.yaml".into(),
            )
        })
        .with_state(AppState { manager, root })
}

async fn health(State(s): State<AppState>) -> ApiResult<api::Health> {
    blocking(move || {
        let m = s.manager.template_memory();
        Ok(api::Health {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            root: s.root.display().to_string(),
            sandboxes: s.manager.list().len(),
            template_memory: api::Memory {
                rss: m.rss,
                pss: m.pss,
                private: m.private,
            },
        })
    })
    .await
}

async fn doctor(State(s): State<AppState>) -> ApiResult<Vec<deltabox_sandbox::Check>> {
    blocking(move || Ok(deltabox_sandbox::doctor(s.manager.paths()))).await
}

async fn usage(State(s): State<AppState>) -> ApiResult<deltabox_sandbox::Usage> {
    blocking(move || Ok(s.manager.usage())).await
}

async fn list(State(s): State<AppState>) -> ApiResult<Vec<deltabox_sandbox::SandboxInfo>> {
    blocking(move || Ok(s.manager.list())).await
}

async fn create(
    State(s): State<AppState>,
    body: Option<Json<api::CreateRequest>>,
) -> Result<(StatusCode, Json<deltabox_sandbox::SandboxInfo>), ApiError> {
    let req = body.map(|b| b.0).unwrap_or_default();
    let shell = match req.shell.as_deref() {
        None | Some("bash") => deltabox_sandbox::ShellKind::Bash,
        Some("python") => deltabox_sandbox::ShellKind::Python,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown shell {other:?}: use \"bash\" or \"python\""),
            ))
        }
    };
    let opts = deltabox_sandbox::CreateOptions {
        base: req.base.map(PathBuf::from),
        net: req.net,
        shell,
        owner_pid: req.owner_pid,
        ..Default::default()
    };
    blocking(move || s.manager.create(opts))
        .await
        .map(|j| (StatusCode::CREATED, j))
}

async fn get_sandbox(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<deltabox_sandbox::SandboxInfo> {
    blocking(move || s.manager.get(&id)).await
}

#[derive(Serialize)]
struct Removed {
    removed: String,
}

async fn remove(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Removed> {
    blocking(move || s.manager.remove(&id).map(|_| Removed { removed: id })).await
}

async fn exec(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<api::ExecRequest>,
) -> ApiResult<api::ExecResponse> {
    let mut opts = ExecOptions {
        timeout: req.timeout_ms.map(Duration::from_millis),
        ..Default::default()
    };
    if let Some(m) = req.max_output_bytes {
        opts.max_output = m;
    }
    blocking(move || {
        let o = s.manager.exec(&id, &req.command, &opts)?;
        Ok(api::ExecResponse {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            exit_code: o.exit_code,
            duration_ms: o.duration_ms,
            timed_out: o.timed_out,
            truncated: o.truncated,
            stdout_bytes: o.stdout_bytes,
            stderr_bytes: o.stderr_bytes,
            shell_restarted: o.shell_restarted,
            killed: o.killed,
        })
    })
    .await
}

async fn checkpoint(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<api::CheckpointRequest>>,
) -> Result<(StatusCode, Json<deltabox_sandbox::CheckpointInfo>), ApiError> {
    let label = body.and_then(|b| b.0.label);
    blocking(move || s.manager.checkpoint(&id, label))
        .await
        .map(|j| (StatusCode::CREATED, j))
}

async fn restore(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<api::RestoreRequest>,
) -> ApiResult<api::RestoreResponse> {
    blocking(move || {
        let ms = s.manager.restore(&id, &req.checkpoint, req.files_only)?;
        Ok(api::RestoreResponse {
            sandbox: id,
            checkpoint: req.checkpoint,
            ms,
        })
    })
    .await
}

async fn fork(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<api::ForkRequest>>,
) -> Result<(StatusCode, Json<api::ForkResponse>), ApiError> {
    let req = body.map(|b| b.0).unwrap_or(api::ForkRequest {
        n: 1,
        owner_pid: None,
    });
    if !(1..=256).contains(&req.n) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("n = {}: fork makes 1 to 256 sandboxes per request", req.n),
        ));
    }
    let start = std::time::Instant::now();
    blocking(move || {
        let (ids, ms) = s.manager.fork(&id, req.n, req.owner_pid)?;
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(api::ForkResponse {
            checkpoint: id,
            ids,
            ms_total: start.elapsed().as_secs_f64() * 1000.0,
            ms_p50: api::nearest_rank(&sorted, 0.5),
            ms_p99: api::nearest_rank(&sorted, 0.99),
            ms,
        })
    })
    .await
    .map(|j| (StatusCode::CREATED, j))
}

async fn pool(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<api::PoolRequest>,
) -> ApiResult<api::PoolResponse> {
    if req.size > 256 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("size {}: a warm pool holds at most 256 children", req.size),
        ));
    }
    blocking(move || {
        let ready = s.manager.set_pool(&id, req.size)?;
        Ok(api::PoolResponse {
            checkpoint: id,
            size: req.size,
            ready,
        })
    })
    .await
}

async fn tree(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Vec<deltabox_sandbox::TreeNode>> {
    blocking(move || s.manager.tree(&id)).await
}

async fn get_checkpoint(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<deltabox_layerstore::CheckpointRecord> {
    blocking(move || s.manager.checkpoint_record(&id)).await
}

async fn remove_checkpoint(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Removed> {
    blocking(move || {
        s.manager
            .remove_checkpoint(&id)
            .map(|_| Removed { removed: id })
    })
    .await
}

#[derive(serde::Deserialize)]
struct DiffQuery {
    from: String,
    to: String,
    #[serde(default)]
    patch: bool,
}

async fn diff(
    State(s): State<AppState>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<deltabox_sandbox::DiffResult> {
    blocking(move || s.manager.diff(&q.from, &q.to, q.patch)).await
}

async fn gc(State(s): State<AppState>) -> ApiResult<deltabox_sandbox::GcReport> {
    blocking(move || s.manager.gc()).await
}
