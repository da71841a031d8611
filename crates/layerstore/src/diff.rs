//! Differences between two checkpoints, computed from the layers that are not shared by
//! both stacks: cost grows with what changed, not with the size of the tree.

use crate::view::{layer_paths, Entry, EntryKind, View};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Deleted,
    Modified,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Path inside the sandbox, absolute (`/tmp/w/f`).
    pub path: String,
    pub change: ChangeKind,
    /// The kind of entry (of the newer side for additions and modifications).
    pub kind: EntryKind,
    /// For modifications: what differs (`content`, `mode`, `owner`, `type`, `target`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
    #[serde(skip)]
    pub(crate) old: Option<Entry>,
    #[serde(skip)]
    pub(crate) new: Option<Entry>,
}

fn same_content(a: &Entry, b: &Entry) -> bool {
    if a.real == b.real {
        return true;
    }
    match a.kind {
        EntryKind::File => {
            a.size == b.size
                && fs::read(&a.real)
                    .ok()
                    .zip(fs::read(&b.real).ok())
                    .is_some_and(|(x, y)| x == y)
        }
        EntryKind::Symlink => fs::read_link(&a.real).ok() == fs::read_link(&b.real).ok(),
        EntryKind::Other => a.rdev == b.rdev,
        EntryKind::Dir => true,
    }
}

fn what_differs(a: &Entry, b: &Entry) -> Vec<&'static str> {
    let mut w = Vec::new();
    if a.kind != b.kind {
        w.push("type");
        return w;
    }
    if !same_content(a, b) {
        w.push(if a.kind == EntryKind::Symlink {
            "target"
        } else {
            "content"
        });
    }
    if a.mode != b.mode && a.kind != EntryKind::Symlink {
        w.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        w.push("owner");
    }
    w
}

/// Length of the common bottom part of two stacks.
fn common_suffix(a: &[PathBuf], b: &[PathBuf]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// Changes that turn view `a` into view `b`, sorted by path.
pub fn diff_views(a: &View, b: &View) -> Vec<Change> {
    let shared = common_suffix(&a.dirs, &b.dirs);
    let mut candidates: BTreeSet<(PathBuf, bool)> = BTreeSet::new();
    for layer in a.dirs[..a.dirs.len() - shared]
        .iter()
        .chain(&b.dirs[..b.dirs.len() - shared])
    {
        candidates.extend(layer_paths(layer));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (rel, deep) in candidates {
        compare(a, b, &rel, deep, &mut seen, &mut out);
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

fn compare(
    a: &View,
    b: &View,
    rel: &Path,
    deep: bool,
    seen: &mut BTreeSet<PathBuf>,
    out: &mut Vec<Change>,
) {
    if !seen.insert(rel.to_path_buf()) {
        return;
    }
    let (ea, eb) = (a.lookup(rel), b.lookup(rel));
    let path = format!("/{}", rel.display());
    let change = match (&ea, &eb) {
        (None, None) => None,
        (None, Some(n)) => Some((ChangeKind::Added, n.kind, vec![])),
        (Some(o), None) => Some((ChangeKind::Deleted, o.kind, vec![])),
        (Some(o), Some(n)) => {
            let w = what_differs(o, n);
            (!w.is_empty()).then_some((ChangeKind::Modified, n.kind, w))
        }
    };
    let kinds_differ = ea.as_ref().map(|e| e.kind) != eb.as_ref().map(|e| e.kind);
    let any_dir = [&ea, &eb]
        .iter()
        .any(|e| e.as_ref().is_some_and(|e| e.kind == EntryKind::Dir));
    if let Some((change, kind, what)) = change {
        out.push(Change {
            path,
            change,
            kind,
            what,
            old: ea,
            new: eb,
        });
    }
    if any_dir && (deep || kinds_differ) {
        let names: BTreeSet<_> = a
            .read_dir(rel)
            .into_keys()
            .chain(b.read_dir(rel).into_keys())
            .collect();
        for n in names {
            compare(a, b, &rel.join(n), true, seen, out);
        }
    }
}

fn text_of(e: &Option<Entry>) -> Option<String> {
    match e {
        None => Some(String::new()),
        Some(e) if e.kind == EntryKind::File && e.size <= 16 << 20 => {
            let bytes = fs::read(&e.real).ok()?;
            if bytes.contains(&0) {
                return None;
            }
            String::from_utf8(bytes).ok()
        }
        Some(_) => None,
    }
}

/// A unified diff (git style, applies with `git apply` / `patch -p1`) of the file
/// changes; directories are implied by the files in them.
pub fn render_patch(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        let files = [&c.old, &c.new]
            .iter()
            .all(|e| e.as_ref().is_none_or(|e| e.kind == EntryKind::File));
        if !files || c.kind == EntryKind::Dir {
            continue;
        }
        let p = c.path.trim_start_matches('/');
        out.push_str(&format!("diff --git a/{p} b/{p}\n"));
        match (&c.old, &c.new) {
            (None, Some(n)) => out.push_str(&format!("new file mode 100{:o}\n", n.mode)),
            (Some(o), None) => out.push_str(&format!("deleted file mode 100{:o}\n", o.mode)),
            (Some(o), Some(n)) if o.mode != n.mode => out.push_str(&format!(
                "old mode 100{:o}\nnew mode 100{:o}\n",
                o.mode, n.mode
            )),
            _ => {}
        }
        if !c.what.is_empty() && !c.what.contains(&"content") {
            continue;
        }
        let (from, to) = (
            if c.old.is_some() {
                format!("a/{p}")
            } else {
                "/dev/null".into()
            },
            if c.new.is_some() {
                format!("b/{p}")
            } else {
                "/dev/null".into()
            },
        );
        match (text_of(&c.old), text_of(&c.new)) {
            (Some(x), Some(y)) => {
                let d = similar::TextDiff::from_lines(&x, &y);
                let body = d
                    .unified_diff()
                    .context_radius(3)
                    .header(&from, &to)
                    .to_string();
                out.push_str(&body);
                if !body.ends_with('\n') && !body.is_empty() {
                    out.push('\n');
                }
            }
            _ => out.push_str(&format!("Binary files {from} and {to} differ\n")),
        }
    }
    out
}
