//! The on-disk store: `layers/<id>` (overlay layer directories), `work/<id>` (overlayfs
//! work directories of live uppers) and `meta/` (one JSON file per checkpoint and per
//! sandbox, each replaced atomically). Layer reference counts are derived from the
//! records on every GC rather than stored, so they can never drift after a crash.

use crate::fsutil::{disk_usage, remove_tree, write_atomic};
use crate::ids::{new_id, validate_id, IdKind};
use crate::records::{CheckpointRecord, SandboxRecord};
use crate::squash::squash_layers;
use crate::view::View;
use crate::{Result, StoreError};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Frozen layers a stack may hold before it is squashed. Far below overlayfs' limit of
/// 500 lower layers; deep stacks also slow every negative lookup.
pub const MAX_STACK_DEPTH: usize = 24;

#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    pub layers_removed: usize,
    pub work_dirs_removed: usize,
    pub bytes_freed: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Usage {
    pub layers: usize,
    pub bytes: u64,
    pub checkpoints: usize,
    pub sandboxes: usize,
}

#[derive(Default)]
struct State {
    checkpoints: HashMap<String, CheckpointRecord>,
    sandboxes: HashMap<String, SandboxRecord>,
    /// Layers created by an operation that has not recorded them yet.
    pinned: HashSet<String>,
    /// Empty layers made ahead of time (also pinned), so that checkpoint and restore need
    /// no allocation on their critical path, and a restore still works on a full store.
    spare: Vec<String>,
}

/// Empty layers kept ready.
const SPARE_LAYERS: usize = 2;
/// Space held back so metadata can still be written when sandboxes fill the store.
const RESERVE_BYTES: u64 = 8 << 20;

pub struct LayerStore {
    root: PathBuf,
    state: Mutex<State>,
}

fn read_records<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| StoreError::io("read dir", dir, e))? {
        let e = e.map_err(|e| StoreError::io("read dir", dir, e))?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            // Left-over temporary file of an interrupted atomic write.
            let _ = fs::remove_file(&p);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let data = fs::read(&p).map_err(|e| StoreError::io("read", &p, e))?;
        out.push(
            serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
                path: p.clone(),
                detail: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

impl LayerStore {
    /// Opens (creating if needed) the store at `root` and loads every record.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in ["layers", "work", "meta/checkpoints", "meta/sandboxes"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| StoreError::io("create", &p, e))?;
        }
        let mut st = State::default();
        for c in read_records::<CheckpointRecord>(&root.join("meta/checkpoints"))? {
            st.checkpoints.insert(c.id.clone(), c);
        }
        for s in read_records::<SandboxRecord>(&root.join("meta/sandboxes"))? {
            st.sandboxes.insert(s.id.clone(), s);
        }
        let store = LayerStore {
            root,
            state: Mutex::new(st),
        };
        store.roll_forward()?;
        store.refill_spares();
        store.ensure_reserve();
        Ok(store)
    }

    /// Finishes checkpoints interrupted between their two metadata writes: the checkpoint
    /// record (written first) already freezes the sandbox's upper, so the sandbox must
    /// move to a fresh upper above it. Nothing is ever allowed to write a frozen layer.
    fn roll_forward(&self) -> Result<()> {
        let fixes: Vec<(SandboxRecord, CheckpointRecord)> = {
            let st = self.state.lock().unwrap();
            st.sandboxes
                .values()
                .filter_map(|sb| {
                    st.checkpoints
                        .values()
                        .find(|c| c.sandbox == sb.id && c.layers.first() == Some(&sb.upper))
                        .map(|c| (sb.clone(), c.clone()))
                })
                .collect()
        };
        for (mut sb, ck) in fixes {
            tracing::warn!(sandbox = %sb.id, checkpoint = %ck.id, "finishing interrupted checkpoint");
            let upper = self.new_layer()?;
            sb.layers = ck.layers.clone();
            sb.upper = upper.clone();
            sb.head = Some(ck.id.clone());
            self.put_sandbox(&sb)?;
            self.unpin(&upper);
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join("layers").join(id)
    }

    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.root.join("work").join(id)
    }

    fn reserve_path(&self) -> PathBuf {
        self.root.join("meta/reserve")
    }

    /// Holds back [`RESERVE_BYTES`] (idempotent; best effort).
    pub fn ensure_reserve(&self) {
        let p = self.reserve_path();
        if p.exists() {
            return;
        }
        if let Ok(f) = fs::File::create(&p) {
            use std::os::fd::AsRawFd;
            // SAFETY: fallocate on an fd we own.
            if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, RESERVE_BYTES as libc::off_t) } != 0 {
                let _ = fs::remove_file(&p);
            }
        }
    }

    /// Runs a metadata write; when the store is full, gives up the reserve and retries.
    fn with_reserve(&self, f: impl Fn() -> Result<()>) -> Result<()> {
        match f() {
            Err(StoreError::NoSpace { .. }) if self.reserve_path().exists() => {
                tracing::warn!("layer store full: using the metadata reserve");
                let _ = fs::remove_file(self.reserve_path());
                f()
            }
            r => r,
        }
    }

    /// Tops up the pool of ready empty layers (best effort: a full store keeps fewer).
    pub fn refill_spares(&self) {
        while self.state.lock().unwrap().spare.len() < SPARE_LAYERS {
            match self.make_layer() {
                Ok(id) => self.state.lock().unwrap().spare.push(id),
                Err(_) => break,
            }
        }
    }

    /// An empty layer (with its overlayfs work directory), pinned against GC until
    /// [`LayerStore::unpin`]. Taken from the ready pool when it has one.
    pub fn new_layer(&self) -> Result<String> {
        if let Some(id) = self.state.lock().unwrap().spare.pop() {
            return Ok(id);
        }
        self.make_layer()
    }

    fn make_layer(&self) -> Result<String> {
        let id = new_id(IdKind::Layer);
        let (l, w) = (self.layer_dir(&id), self.work_dir(&id));
        self.state.lock().unwrap().pinned.insert(id.clone());
        let made = fs::create_dir(&l)
            .map_err(|e| StoreError::io("create layer", &l, e))
            .and_then(|_| fs::create_dir(&w).map_err(|e| StoreError::io("create work dir", &w, e)));
        if let Err(e) = made {
            let _ = remove_tree(&l);
            self.unpin(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Creates a layer without a work directory (frozen layers made by the store itself).
    fn new_frozen_layer(&self) -> Result<String> {
        let id = self.new_layer()?;
        let _ = fs::remove_dir(self.work_dir(&id));
        Ok(id)
    }

    pub fn unpin(&self, id: &str) {
        self.state.lock().unwrap().pinned.remove(id);
    }

    /// Drops a pinned layer that an operation created but will not use.
    pub fn discard_layer(&self, id: &str) {
        let _ = remove_tree(&self.layer_dir(id));
        let _ = remove_tree(&self.work_dir(id));
        self.unpin(id);
    }

    fn meta_path(&self, kind: IdKind, id: &str) -> PathBuf {
        let sub = match kind {
            IdKind::Checkpoint => "checkpoints",
            _ => "sandboxes",
        };
        self.root.join("meta").join(sub).join(format!("{id}.json"))
    }

    pub fn put_checkpoint(&self, rec: &CheckpointRecord) -> Result<()> {
        let data = serde_json::to_vec_pretty(rec).expect("records serialize");
        self.with_reserve(|| write_atomic(&self.meta_path(IdKind::Checkpoint, &rec.id), &data))?;
        self.state
            .lock()
            .unwrap()
            .checkpoints
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    pub fn put_sandbox(&self, rec: &SandboxRecord) -> Result<()> {
        let data = serde_json::to_vec_pretty(rec).expect("records serialize");
        self.with_reserve(|| write_atomic(&self.meta_path(IdKind::Sandbox, &rec.id), &data))?;
        self.state
            .lock()
            .unwrap()
            .sandboxes
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// A checkpoint that can be restored (not removed).
    pub fn checkpoint(&self, id: &str) -> Result<CheckpointRecord> {
        let c = self.checkpoint_any(id)?;
        if c.removed {
            return Err(StoreError::CheckpointRemoved(id.to_string()));
        }
        Ok(c)
    }

    /// A checkpoint record, tombstones included.
    pub fn checkpoint_any(&self, id: &str) -> Result<CheckpointRecord> {
        validate_id(IdKind::Checkpoint, id)?;
        self.state
            .lock()
            .unwrap()
            .checkpoints
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: "checkpoint",
                id: id.to_string(),
                hint: "tree SANDBOX",
            })
    }

    pub fn sandbox(&self, id: &str) -> Result<SandboxRecord> {
        validate_id(IdKind::Sandbox, id)?;
        self.state
            .lock()
            .unwrap()
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: "sandbox",
                id: id.to_string(),
                hint: "ls",
            })
    }

    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        let mut v: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .sandboxes
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|s| s.created_unix_ms);
        v
    }

    /// Every checkpoint of a sandbox, tombstones included, oldest first.
    pub fn checkpoints_of(&self, sandbox: &str) -> Vec<CheckpointRecord> {
        let mut v: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .checkpoints
            .values()
            .filter(|c| c.sandbox == sandbox)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            a.created_unix_ms
                .cmp(&b.created_unix_ms)
                .then(a.id.cmp(&b.id))
        });
        v
    }

    /// Turns a checkpoint into a tombstone: it can no longer be restored, and its layers
    /// are released unless other checkpoints still stand on them.
    pub fn remove_checkpoint(&self, id: &str) -> Result<()> {
        let mut c = self.checkpoint(id)?;
        c.removed = true;
        c.layers.clear();
        self.put_checkpoint(&c)
    }

    /// Forgets a sandbox and tombstones its checkpoints.
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        self.sandbox(id)?;
        for mut c in self.checkpoints_of(id).into_iter().filter(|c| !c.removed) {
            c.removed = true;
            c.layers.clear();
            self.put_checkpoint(&c)?;
        }
        let p = self.meta_path(IdKind::Sandbox, id);
        fs::remove_file(&p).map_err(|e| StoreError::io("remove", &p, e))?;
        self.state.lock().unwrap().sandboxes.remove(id);
        Ok(())
    }

    /// The merged view of a stack of frozen layers over `base`.
    pub fn view(&self, layers: &[String], base: &Path) -> View {
        let mut dirs: Vec<PathBuf> = layers.iter().map(|l| self.layer_dir(l)).collect();
        dirs.push(base.to_path_buf());
        View::new(dirs)
    }

    /// Deletes every layer no checkpoint, sandbox or in-flight operation needs, and the
    /// work directories of layers that are no longer live uppers.
    pub fn gc(&self) -> Result<GcReport> {
        let (keep, live_uppers) = {
            let st = self.state.lock().unwrap();
            let mut keep: HashSet<String> = st.pinned.clone();
            let mut live = st.pinned.clone();
            for c in st.checkpoints.values() {
                keep.extend(c.layers.iter().cloned());
            }
            for s in st.sandboxes.values() {
                keep.extend(s.layers.iter().cloned());
                keep.insert(s.upper.clone());
                live.insert(s.upper.clone());
            }
            (keep, live)
        };
        let mut report = GcReport::default();
        for (sub, keep_set) in [("layers", &keep), ("work", &live_uppers)] {
            let dir = self.root.join(sub);
            for e in fs::read_dir(&dir).map_err(|e| StoreError::io("read dir", &dir, e))? {
                let e = e.map_err(|e| StoreError::io("read dir", &dir, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if keep_set.contains(&name) {
                    continue;
                }
                let bytes = disk_usage(&e.path());
                remove_tree(&e.path())?;
                report.bytes_freed += bytes;
                if sub == "layers" {
                    report.layers_removed += 1;
                } else {
                    report.work_dirs_removed += 1;
                }
            }
        }
        Ok(report)
    }

    pub fn usage(&self) -> Usage {
        let layers = fs::read_dir(self.root.join("layers"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        let st = self.state.lock().unwrap();
        Usage {
            layers,
            bytes: disk_usage(&self.root.join("layers")),
            checkpoints: st.checkpoints.values().filter(|c| !c.removed).count(),
            sandboxes: st.sandboxes.len(),
        }
    }

    /// Flushes the store's filesystem. Records are atomic against a crash of the daemon
    /// as soon as they are written; this makes them survive a power loss too.
    pub fn sync(&self) {
        if let Ok(f) = fs::File::open(&self.root) {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs takes any open fd of the filesystem; f outlives the call.
            unsafe { libc::syncfs(f.as_raw_fd()) };
        }
    }

    /// Merges a run of frozen layers (a whole stack, bottom included) into one new layer
    /// and makes every record whose stack ends with that run use it instead. The caller
    /// serializes this with changes to the sandboxes concerned. Old layers go at the next
    /// GC. Returns the new layer, or `None` when no record used the run any more.
    pub fn squash(&self, layers: &[String]) -> Result<Option<String>> {
        let id = self.new_frozen_layer()?;
        let dirs: Vec<PathBuf> = layers.iter().map(|l| self.layer_dir(l)).collect();
        if let Err(e) = squash_layers(&dirs, &self.layer_dir(&id)) {
            self.discard_layer(&id);
            return Err(e);
        }
        // Any stack that ends with the squashed run can stand on the merged layer instead.
        let replace = |stack: &[String]| -> Option<Vec<String>> {
            let cut = stack.len().checked_sub(layers.len())?;
            (stack[cut..] == *layers).then(|| {
                let mut v = stack[..cut].to_vec();
                v.push(id.clone());
                v
            })
        };
        let (cks, sbs): (Vec<CheckpointRecord>, Vec<SandboxRecord>) = {
            let st = self.state.lock().unwrap();
            (
                st.checkpoints
                    .values()
                    .filter_map(|c| {
                        replace(&c.layers).map(|layers| CheckpointRecord {
                            layers,
                            ..c.clone()
                        })
                    })
                    .collect(),
                st.sandboxes
                    .values()
                    .filter_map(|s| {
                        replace(&s.layers).map(|layers| SandboxRecord {
                            layers,
                            ..s.clone()
                        })
                    })
                    .collect(),
            )
        };
        if cks.is_empty() && sbs.is_empty() {
            self.discard_layer(&id);
            return Ok(None);
        }
        for c in &cks {
            self.put_checkpoint(c)?;
        }
        for s in &sbs {
            self.put_sandbox(s)?;
        }
        self.unpin(&id);
        Ok(Some(id))
    }
}
