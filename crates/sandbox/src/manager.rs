//! The set of sandboxes a daemon owns, and the operations on them by id.

use crate::chores::Chores;
use crate::sandbox::{ExecOptions, Sandbox};
use crate::shell::ExecOutput;
use crate::{mask, Paths, SandboxError};
use deltabox_layerstore::{
    diff_views, new_id, render_patch, validate_id, Change, CheckpointRecord, GcReport, HugePages,
    IdKind, LayerStore, Owner, Reroot, SandboxRecord, ShellKind, StoreError, Usage,
    MAX_STACK_DEPTH,
};
use deltabox_process::{inspect, MemoryCost};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub base: Option<PathBuf>,
    pub net: bool,
    pub shell: ShellKind,
    /// Lease the sandbox to this process: it is removed when the process exits.
    pub owner_pid: Option<i32>,
    /// Re-rooting of its processes (default: as the daemon is configured).
    pub reroot: Reroot,
    /// Huge pages for its shell's own memory (default: as the daemon is configured).
    pub huge_pages: HugePages,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    pub id: String,
    pub base: PathBuf,
    pub net: bool,
    pub shell: ShellKind,
    pub head: Option<String>,
    pub state: String,
    pub checkpoints: usize,
    pub depth: usize,
    pub created_unix_ms: u64,
    /// The process the sandbox is leased to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<i32>,
    /// The sandbox it was forked from (while both run: it ends with that one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    pub id: String,
    pub sandbox: String,
    pub parent: Option<String>,
    pub ms: f64,
    pub depth: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TreeNode {
    pub id: String,
    pub parent: Option<String>,
    pub label: Option<String>,
    pub created_unix_ms: u64,
    pub removed: bool,
    pub head: bool,
    pub depth: usize,
    pub ms: f64,
    /// The frozen process template, while the sandbox runs and keeps one.
    pub template: Option<TemplateInfo>,
}

/// A checkpoint's frozen process and what it costs.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateInfo {
    pub pid: i32,
    pub memory: MemoryCost,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffResult {
    pub from: String,
    pub to: String,
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

struct Slot {
    sb: Option<Sandbox>,
    rec: SandboxRecord,
    dead: Option<String>,
}

/// One sandbox as the manager holds it. Operations on it are serialized by `slot`;
/// removal does not wait for them: it kills the init first (see [`Manager::remove`]).
pub struct Handle {
    pub id: String,
    pid: AtomicI32,
    removed: AtomicBool,
    squashing: AtomicBool,
    slot: Mutex<Slot>,
    /// The running sandbox's templates, readable without the slot (an exec may hold it).
    templates: Option<crate::sandbox::Templates>,
    /// The sandbox it was forked from (`SandboxRecord::forked_from`), likewise.
    forked_from: Option<String>,
    /// Its lease (`SandboxRecord::owner`), likewise: the lease check must not wait for
    /// an exec that holds the slot.
    owner: Mutex<Option<Owner>>,
}

pub struct Manager {
    store: Arc<LayerStore>,
    paths: Paths,
    sandboxes: Mutex<HashMap<String, Arc<Handle>>>,
    /// Warm pools: checkpoint -> (target size, pre-forked children ready to hand out).
    pools: Mutex<HashMap<String, (usize, Vec<String>)>>,
    chores: Chores,
}

impl Manager {
    /// Opens the store and brings every recorded sandbox back (a fresh shell on its last
    /// live files: shell state does not survive a daemon restart).
    pub fn open(paths: Paths) -> Result<Self, SandboxError> {
        let store = Arc::new(LayerStore::open(&paths.root)?);
        std::fs::create_dir_all(paths.staging())
            .map_err(|e| SandboxError::Io(format!("create {}: {e}", paths.staging().display())))?;
        let m = Manager {
            store,
            paths,
            sandboxes: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            chores: Chores::start(),
        };
        for mut rec in m.store.sandboxes() {
            if rec.pooled {
                // Never handed out; its template is gone with the old daemon.
                let _ = m.store.remove_sandbox(&rec.id);
                m.store.discard_layer(&rec.upper);
                continue;
            }
            if rec.forked_from.take().is_some() {
                // It restarts in namespaces of its own: no longer tied to its parent.
                let _ = m.store.put_sandbox(&rec);
            }
            let (sb, dead) = match m.start_with_retry(&rec) {
                Ok(sb) => (Some(sb), None),
                Err(e) => {
                    tracing::warn!(sandbox = %rec.id, error = %e, "could not restart sandbox");
                    (None, Some(e.to_string()))
                }
            };
            m.insert(rec, sb, dead);
        }
        Ok(m)
    }

    pub fn store(&self) -> &Arc<LayerStore> {
        &self.store
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// A crashed daemon's sandboxes die with it, but their overlay mounts may take a
    /// moment to go away (the upper stays "in use" until then).
    fn start_with_retry(&self, rec: &SandboxRecord) -> Result<Sandbox, SandboxError> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match Sandbox::start(self.store.clone(), &self.paths, rec) {
                Err(SandboxError::Sys { source, .. })
                    if source.errno() == Some(libc::EBUSY) && Instant::now() < until =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    fn insert(&self, rec: SandboxRecord, sb: Option<Sandbox>, dead: Option<String>) -> Arc<Handle> {
        let h = Arc::new(Handle {
            id: rec.id.clone(),
            pid: AtomicI32::new(sb.as_ref().map(|s| s.pid()).unwrap_or(0)),
            removed: AtomicBool::new(false),
            squashing: AtomicBool::new(false),
            templates: sb.as_ref().map(|s| s.templates()),
            forked_from: rec.forked_from.clone(),
            owner: Mutex::new(rec.owner),
            slot: Mutex::new(Slot { sb, rec, dead }),
        });
        self.sandboxes
            .lock()
            .unwrap()
            .insert(h.id.clone(), h.clone());
        h
    }

    fn handle(&self, id: &str) -> Result<Arc<Handle>, SandboxError> {
        validate_id(IdKind::Sandbox, id)?;
        self.sandboxes
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| {
                StoreError::NotFound {
                    kind: "sandbox",
                    id: id.into(),
                    hint: "ls",
                }
                .into()
            })
    }

    /// Runs `f` on the live sandbox, turning failures caused by a concurrent removal
    /// into [`SandboxError::Removed`].
    fn with_live<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Sandbox, &mut SandboxRecord) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let h = self.handle(id)?;
        let mut slot = h.slot.lock().unwrap();
        if h.removed.load(Ordering::SeqCst) {
            return Err(SandboxError::Removed(id.into()));
        }
        let Slot { sb, rec, dead } = &mut *slot;
        let Some(sb) = sb.as_mut() else {
            return Err(SandboxError::Dead {
                id: id.into(),
                why: dead.clone().unwrap_or_default(),
            });
        };
        let r = f(sb, rec);
        if r.is_err() && h.removed.load(Ordering::SeqCst) {
            return Err(SandboxError::Removed(id.into()));
        }
        r
    }

    pub fn create(&self, opts: CreateOptions) -> Result<SandboxInfo, SandboxError> {
        let owner = owner_of(opts.owner_pid)?;
        let base_in = opts.base.unwrap_or_else(|| PathBuf::from("/"));
        let base = base_in.canonicalize().map_err(|e| SandboxError::BadBase {
            path: base_in.display().to_string(),
            why: e.to_string(),
        })?;
        if !base.is_dir() {
            return Err(SandboxError::BadBase {
                path: base.display().to_string(),
                why: "not a directory".into(),
            });
        }
        if base.starts_with(&self.paths.root) {
            return Err(SandboxError::BadBase {
                path: base.display().to_string(),
                why: "inside the layer store; use a checkpoint instead".into(),
            });
        }
        if !base.join("bin/bash").exists() {
            return Err(SandboxError::BadBase {
                path: base.display().to_string(),
                why: "it has no /bin/bash; the base is the sandbox's root filesystem and the persistent shell runs from it (use a full root tree, e.g. one made by debootstrap, or the default base /)".into(),
            });
        }
        if opts.shell == ShellKind::Python
            && !base
                .join(crate::shell::PYTHON.trim_start_matches('/'))
                .exists()
        {
            return Err(SandboxError::BadBase {
                path: base.display().to_string(),
                why: format!("it has no {}; a Python session runs the base's own interpreter (install python3 in the base, or use the default base /)", crate::shell::PYTHON),
            });
        }
        let mask = self.store.new_layer()?;
        let _ = std::fs::remove_dir(self.store.work_dir(&mask));
        let mut hidden = vec![self.paths.root.clone()];
        hidden.extend(self.paths.hidden.iter().cloned());
        if let Err(e) = mask::build(&self.store.layer_dir(&mask), &base, &hidden) {
            self.store.discard_layer(&mask);
            return Err(e);
        }
        let upper = match self.store.new_layer() {
            Ok(u) => u,
            Err(e) => {
                self.store.discard_layer(&mask);
                return Err(e.into());
            }
        };
        let rec = SandboxRecord {
            id: new_id(IdKind::Sandbox),
            base,
            layers: vec![mask.clone()],
            upper: upper.clone(),
            head: None,
            net: opts.net,
            shell: opts.shell,
            owner,
            forked_from: None,
            pooled: false,
            created_unix_ms: now_ms(),
            reroot: opts.reroot,
            huge_pages: opts.huge_pages,
        };
        let started = self
            .store
            .put_sandbox(&rec)
            .map_err(SandboxError::from)
            .and_then(|_| Sandbox::start(self.store.clone(), &self.paths, &rec));
        self.store.unpin(&mask);
        self.store.unpin(&upper);
        match started {
            Ok(sb) => {
                let h = self.insert(rec, Some(sb), None);
                self.info(&h)
            }
            Err(e) => {
                let _ = self.store.remove_sandbox(&rec.id);
                self.store.discard_layer(&mask);
                self.store.discard_layer(&upper);
                Err(e)
            }
        }
    }

    fn info(&self, h: &Handle) -> Result<SandboxInfo, SandboxError> {
        let slot = h.slot.lock().unwrap();
        let state = match (&slot.sb, &slot.dead) {
            (Some(_), _) => "running".to_string(),
            (None, Some(why)) => format!("dead: {why}"),
            (None, None) => "stopped".to_string(),
        };
        Ok(SandboxInfo {
            id: h.id.clone(),
            base: slot.rec.base.clone(),
            net: slot.rec.net,
            shell: slot.rec.shell,
            head: slot.rec.head.clone(),
            state,
            checkpoints: self
                .store
                .checkpoints_of(&h.id)
                .iter()
                .filter(|c| !c.removed)
                .count(),
            depth: slot.rec.layers.len(),
            created_unix_ms: slot.rec.created_unix_ms,
            owner_pid: slot.rec.owner.map(|o| o.pid),
            forked_from: slot.rec.forked_from.clone(),
        })
    }

    pub fn get(&self, id: &str) -> Result<SandboxInfo, SandboxError> {
        let h = self.handle(id)?;
        self.info(&h)
    }

    pub fn list(&self) -> Vec<SandboxInfo> {
        let pooled = self.pooled_ids();
        let hs: Vec<_> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|h| !pooled.contains(&h.id))
            .cloned()
            .collect();
        let mut v: Vec<_> = hs.iter().filter_map(|h| self.info(h).ok()).collect();
        v.sort_by_key(|i| i.created_unix_ms);
        v
    }

    pub fn exec(
        &self,
        id: &str,
        command: &str,
        opts: &ExecOptions,
    ) -> Result<ExecOutput, SandboxError> {
        self.with_live(id, |sb, _| sb.exec(command, opts))
    }

    pub fn checkpoint(
        self: &Arc<Self>,
        id: &str,
        label: Option<String>,
    ) -> Result<CheckpointInfo, SandboxError> {
        let (ck, next) = self.with_live(id, |sb, rec| {
            let (ck, next) = sb.checkpoint(rec, label)?;
            *rec = next.clone();
            Ok((ck, next))
        })?;
        let store = self.store.clone();
        self.chores.later(move || store.refill_spares());
        if next.layers.len() > 2 * MAX_STACK_DEPTH {
            // The background squash fell behind: bound the depth here and now.
            self.squash(id);
        } else if next.layers.len() > MAX_STACK_DEPTH {
            // Off the critical path: the next checkpoint/restore mounts the short stack.
            let h = self.handle(id)?;
            if !h.squashing.swap(true, Ordering::SeqCst) {
                let me = self.clone();
                let id = id.to_string();
                std::thread::spawn(move || {
                    me.squash(&id);
                    h.squashing.store(false, Ordering::SeqCst);
                });
            }
        }
        Ok(CheckpointInfo {
            id: ck.id,
            sandbox: ck.sandbox,
            parent: ck.parent,
            ms: ck.ms,
            depth: ck.layers.len(),
        })
    }

    /// Merges the sandbox's current frozen stack into one layer (under its lock, so the
    /// stack cannot move meanwhile).
    fn squash(&self, id: &str) {
        let Ok(h) = self.handle(id) else { return };
        let mut slot = h.slot.lock().unwrap();
        let layers = slot.rec.layers.clone();
        if layers.len() <= MAX_STACK_DEPTH {
            return; // already short (a restore, or another squash, got here first)
        }
        match self.store.squash(&layers) {
            Ok(_) => {
                if let Ok(rec) = self.store.sandbox(id) {
                    slot.rec = rec;
                }
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "squash failed; the stack stays deep")
            }
        }
    }

    pub fn restore(
        &self,
        id: &str,
        checkpoint: &str,
        files_only: bool,
    ) -> Result<f64, SandboxError> {
        let start = Instant::now();
        let ck = self.store.checkpoint(checkpoint)?;
        if ck.sandbox != id {
            return Err(SandboxError::BadCommand(format!(
                "checkpoint {checkpoint} belongs to sandbox {}, not {id}; restore it there (`deltabox restore {} {checkpoint}`)",
                ck.sandbox, ck.sandbox
            )));
        }
        let old_upper = self.with_live(id, |sb, rec| {
            let old = rec.upper.clone();
            *rec = sb.restore(rec, &ck, files_only)?;
            Ok(old)
        })?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let store = self.store.clone();
        self.chores.later(move || {
            store.discard_layer(&old_upper);
            store.refill_spares();
            store.ensure_reserve();
        });
        Ok(ms)
    }

    /// New sandboxes that start exactly at checkpoint `checkpoint` (files and shell):
    /// each on its own writable layer over the checkpoint's frozen ones, with a copy of
    /// its template in new user/pid/mount/uts/ipc (and net) namespaces. Children waiting
    /// in the checkpoint's warm pool are handed out first. Returns their ids and how
    /// long each took (ms).
    pub fn fork(
        &self,
        checkpoint: &str,
        n: usize,
        owner_pid: Option<i32>,
    ) -> Result<(Vec<String>, Vec<f64>), SandboxError> {
        let ck = self.store.checkpoint(checkpoint)?;
        let owner = owner_of(owner_pid)?;
        let (mut ids, mut ms) = (Vec::new(), Vec::new());
        while ids.len() < n {
            let start = Instant::now();
            let pooled = self
                .pools
                .lock()
                .unwrap()
                .get_mut(&ck.id)
                .and_then(|(_, ready)| ready.pop());
            let got = match pooled {
                Some(id) => self.hand_out(&id, owner).map(|_| id),
                None => self.fork_one(&ck, owner, false),
            };
            match got {
                Ok(id) => {
                    ids.push(id);
                    ms.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                Err(e) => {
                    for id in &ids {
                        let _ = self.remove(id);
                    }
                    return Err(e);
                }
            }
        }
        Ok((ids, ms))
    }

    /// A pooled child becomes an ordinary sandbox.
    fn hand_out(&self, id: &str, owner: Option<Owner>) -> Result<(), SandboxError> {
        let h = self.handle(id)?;
        let mut slot = h.slot.lock().unwrap();
        slot.rec.pooled = false;
        slot.rec.owner = owner;
        slot.rec.created_unix_ms = now_ms();
        self.store.put_sandbox(&slot.rec)?;
        *h.owner.lock().unwrap() = owner;
        Ok(())
    }

    fn fork_one(
        &self,
        ck: &CheckpointRecord,
        owner: Option<Owner>,
        pooled: bool,
    ) -> Result<String, SandboxError> {
        let parent = self.handle(&ck.sandbox)?;
        let upper = self.store.new_layer()?;
        let rec = {
            let slot = parent.slot.lock().unwrap();
            SandboxRecord {
                id: new_id(IdKind::Sandbox),
                base: ck.base.clone(),
                layers: ck.layers.clone(),
                upper: upper.clone(),
                head: Some(ck.id.clone()),
                net: slot.rec.net,
                shell: slot.rec.shell,
                owner,
                forked_from: Some(ck.sandbox.clone()),
                pooled,
                created_unix_ms: now_ms(),
                reroot: slot.rec.reroot,
                huge_pages: slot.rec.huge_pages,
            }
        };
        let made = self
            .with_live(&ck.sandbox, |sb, _| sb.fork_from(&ck.id))
            .map_err(|e| match e {
                SandboxError::NoTemplate { id, ck } => SandboxError::NoTemplateToFork { id, ck },
                e => e,
            })
            .and_then(|fork| {
                self.store.put_sandbox(&rec)?;
                Sandbox::adopt(self.store.clone(), &self.paths, &rec, fork)
            });
        self.store.unpin(&upper);
        match made {
            Ok(sb) => {
                let id = rec.id.clone();
                self.insert(rec, Some(sb), None);
                Ok(id)
            }
            Err(e) => {
                let _ = self.store.remove_sandbox(&rec.id);
                self.store.discard_layer(&upper);
                Err(e)
            }
        }
    }

    /// Keeps `size` children of `checkpoint` pre-forked (0: none): `fork` hands them out
    /// at once. Filled in the background by [`Manager::refill_pools`]. Returns how many
    /// are ready now.
    pub fn set_pool(&self, checkpoint: &str, size: usize) -> Result<usize, SandboxError> {
        let ck = self.store.checkpoint(checkpoint)?;
        self.handle(&ck.sandbox)?;
        let surplus: Vec<String> = {
            let mut pools = self.pools.lock().unwrap();
            let entry = pools.entry(ck.id.clone()).or_default();
            entry.0 = size;
            let extra = entry.1.len().saturating_sub(size);
            let gone = entry.1.drain(..extra).collect();
            if size == 0 {
                pools.remove(&ck.id);
            }
            gone
        };
        for id in surplus {
            let _ = self.remove(&id);
        }
        Ok(self.pool_ready(&ck.id))
    }

    /// Children waiting in warm pools (not listed, not counted).
    fn pooled_ids(&self) -> std::collections::HashSet<String> {
        self.pools
            .lock()
            .unwrap()
            .values()
            .flat_map(|(_, ready)| ready.iter().cloned())
            .collect()
    }

    fn pool_ready(&self, ck: &str) -> usize {
        self.pools
            .lock()
            .unwrap()
            .get(ck)
            .map(|(_, r)| r.len())
            .unwrap_or(0)
    }

    /// Forks one missing pool child, if any pool is short; true if it did some work.
    pub fn refill_pools(&self) -> bool {
        let short = self
            .pools
            .lock()
            .unwrap()
            .iter()
            .find(|(_, (target, ready))| ready.len() < *target)
            .map(|(ck, _)| ck.clone());
        let Some(ck_id) = short else {
            return false;
        };
        let made = self
            .store
            .checkpoint(&ck_id)
            .map_err(SandboxError::from)
            .and_then(|ck| self.fork_one(&ck, None, true));
        match made {
            Ok(id) => {
                let mut pools = self.pools.lock().unwrap();
                match pools.get_mut(&ck_id) {
                    Some((_, ready)) => ready.push(id),
                    None => {
                        drop(pools);
                        let _ = self.remove(&id);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(checkpoint = %ck_id, error = %e, "warm pool: fork failed; pool dropped");
                self.drop_pool(&ck_id);
            }
        }
        true
    }

    fn drop_pool(&self, ck: &str) {
        let gone = self.pools.lock().unwrap().remove(ck);
        for id in gone.map(|(_, r)| r).unwrap_or_default() {
            let _ = self.remove(&id);
        }
    }

    /// Removes a sandbox: kills it at once (an exec running on it fails with "removed"),
    /// then forgets it and its checkpoints.
    pub fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let h = self.handle(id)?;
        // Sandboxes forked from this one live in namespaces nested in its own: they end
        // with it, so they go too (and pools of its checkpoints).
        let forks: Vec<String> = {
            let hs: Vec<_> = self.sandboxes.lock().unwrap().values().cloned().collect();
            hs.iter()
                .filter(|o| o.forked_from.as_deref() == Some(id))
                .map(|o| o.id.clone())
                .collect()
        };
        self.pools
            .lock()
            .unwrap()
            .retain(|ck, _| !self.store.checkpoint_any(ck).is_ok_and(|c| c.sandbox == id));
        for f in forks {
            let _ = self.remove(&f);
        }
        h.removed.store(true, Ordering::SeqCst);
        let pid = h.pid.load(Ordering::SeqCst);
        if pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut slot = h.slot.lock().unwrap();
        if let Some(mut sb) = slot.sb.take() {
            sb.kill();
        }
        self.store.remove_sandbox(id)?;
        self.store.discard_layer(&slot.rec.upper);
        self.sandboxes.lock().unwrap().remove(id);
        Ok(())
    }

    /// Removes the sandboxes whose owner process has exited; returns their ids.
    pub fn reap_orphans(&self) -> Vec<String> {
        let leased: Vec<(String, Owner)> = {
            let hs: Vec<_> = self.sandboxes.lock().unwrap().values().cloned().collect();
            hs.iter()
                .filter_map(|h| Some((h.id.clone(), (*h.owner.lock().unwrap())?)))
                .collect()
        };
        leased
            .into_iter()
            .filter(|(_, o)| inspect::start_time(o.pid) != Some(o.start))
            .filter_map(|(id, o)| match self.remove(&id) {
                Ok(()) => {
                    tracing::info!(sandbox = %id, owner = o.pid, "owner exited: sandbox removed");
                    Some(id)
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "could not remove orphaned sandbox");
                    None
                }
            })
            .collect()
    }

    pub fn remove_checkpoint(&self, id: &str) -> Result<(), SandboxError> {
        self.store.remove_checkpoint(id)?;
        self.drop_pool(id);
        // Its frozen process goes too (best effort: a dead sandbox has none).
        if let Ok(ck) = self.store.checkpoint_any(id) {
            if let Ok(h) = self.handle(&ck.sandbox) {
                if let Some(sb) = h.slot.lock().unwrap().sb.as_mut() {
                    let _ = sb.drop_template(id);
                }
            }
        }
        Ok(())
    }

    /// Live templates of a sandbox by checkpoint id (none when it is not running).
    fn templates_of(&self, h: &Handle) -> HashMap<String, TemplateInfo> {
        h.templates
            .as_ref()
            .map(|t| t.memory())
            .unwrap_or_default()
            .into_iter()
            .map(|(ck, (pid, memory))| (ck, TemplateInfo { pid, memory }))
            .collect()
    }

    /// Memory held by every live template of every sandbox.
    pub fn template_memory(&self) -> MemoryCost {
        let hs: Vec<_> = self.sandboxes.lock().unwrap().values().cloned().collect();
        let mut total = MemoryCost::default();
        for h in hs {
            for t in self.templates_of(&h).values() {
                total += t.memory;
            }
        }
        total
    }

    pub fn checkpoint_record(&self, id: &str) -> Result<CheckpointRecord, SandboxError> {
        Ok(self.store.checkpoint_any(id)?)
    }

    pub fn tree(&self, id: &str) -> Result<Vec<TreeNode>, SandboxError> {
        let h = self.handle(id)?;
        let head = h.slot.lock().unwrap().rec.head.clone();
        let mut templates = self.templates_of(&h);
        Ok(self
            .store
            .checkpoints_of(id)
            .into_iter()
            .map(|c| TreeNode {
                head: head.as_deref() == Some(c.id.as_str()),
                parent: c.parent,
                label: c.label,
                created_unix_ms: c.created_unix_ms,
                removed: c.removed,
                depth: c.layers.len(),
                ms: c.ms,
                template: templates.remove(&c.id),
                id: c.id,
            })
            .collect())
    }

    pub fn diff(&self, from: &str, to: &str, patch: bool) -> Result<DiffResult, SandboxError> {
        let (a, b) = (self.store.checkpoint(from)?, self.store.checkpoint(to)?);
        if a.base != b.base {
            return Err(StoreError::DifferentBases {
                a: a.base,
                b: b.base,
            }
            .into());
        }
        let changes = diff_views(
            &self.store.view(&a.layers, &a.base),
            &self.store.view(&b.layers, &b.base),
        );
        let patch = patch.then(|| render_patch(&changes));
        Ok(DiffResult {
            from: from.into(),
            to: to.into(),
            changes,
            patch,
        })
    }

    pub fn gc(&self) -> Result<GcReport, SandboxError> {
        Ok(self.store.gc()?)
    }

    /// Store usage; `sandboxes` counts those listed (not warm-pool children).
    pub fn usage(&self) -> Usage {
        let mut u = self.store.usage();
        u.sandboxes = u.sandboxes.saturating_sub(self.pooled_ids().len());
        u
    }

    /// Stops every sandbox (daemon shutdown). Records stay: they restart with the daemon.
    pub fn shutdown(&self) {
        let hs: Vec<_> = self.sandboxes.lock().unwrap().values().cloned().collect();
        for h in hs {
            if let Some(mut sb) = h.slot.lock().unwrap().sb.take() {
                sb.kill();
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The lease for `pid` (its start time pins it against pid reuse).
fn owner_of(pid: Option<i32>) -> Result<Option<Owner>, SandboxError> {
    pid.map(|pid| {
        Ok(Owner {
            pid,
            start: (pid > 0)
                .then(|| inspect::start_time(pid))
                .flatten()
                .ok_or(SandboxError::BadOwner(pid))?,
        })
    })
    .transpose()
}
