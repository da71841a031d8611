//! Userspace resolution of a layer stack with overlayfs semantics, so that diff and
//! squash need no mount and can be unit-tested without privileges.

use crate::fsutil::{is_opaque, is_whiteout};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One visible entry of a merged view.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    /// Where the entry really lives (inside one layer or the base).
    pub real: PathBuf,
}

impl Entry {
    fn from_md(md: &fs::Metadata, real: PathBuf) -> Self {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        };
        Entry {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == EntryKind::Dir { 0 } else { md.len() },
            rdev: md.rdev(),
            real,
        }
    }
}

/// What one layer says about one name.
enum Found {
    Absent,
    Whiteout,
    Dir { opaque: bool, md: fs::Metadata },
    NonDir(fs::Metadata),
}

fn probe(p: &Path) -> Found {
    match fs::symlink_metadata(p) {
        Err(_) => Found::Absent,
        Ok(md) if is_whiteout(&md) => Found::Whiteout,
        Ok(md) if md.is_dir() => Found::Dir {
            opaque: is_opaque(p),
            md,
        },
        Ok(md) => Found::NonDir(md),
    }
}

/// A stack of layer directories, top first; the last one is the base.
#[derive(Debug, Clone)]
pub struct View {
    pub dirs: Vec<PathBuf>,
}

impl View {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        View { dirs }
    }

    /// Indices of the layers that contribute to directory `rel` (top first), or `None`
    /// when `rel` is not a directory in the merged view.
    pub fn dir_layers(&self, rel: &Path) -> Option<Vec<usize>> {
        let mut active: Vec<usize> = (0..self.dirs.len()).collect();
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            prefix.push(comp);
            let mut next = Vec::new();
            for &i in &active {
                match probe(&self.dirs[i].join(&prefix)) {
                    Found::Absent => continue,
                    Found::Whiteout | Found::NonDir(_) => break,
                    Found::Dir { opaque, .. } => {
                        next.push(i);
                        if opaque {
                            break;
                        }
                    }
                }
            }
            if next.is_empty() {
                return None;
            }
            active = next;
        }
        Some(active)
    }

    /// The entry visible at `rel`, if any.
    pub fn lookup(&self, rel: &Path) -> Option<Entry> {
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => (p, n),
            _ => {
                let top = *self.dir_layers(rel)?.first()?;
                let md = fs::symlink_metadata(&self.dirs[top]).ok()?;
                return Some(Entry::from_md(&md, self.dirs[top].clone()));
            }
        };
        for i in self.dir_layers(parent)? {
            let real = self.dirs[i].join(parent).join(name);
            match probe(&real) {
                Found::Absent => continue,
                Found::Whiteout => return None,
                Found::Dir { md, .. } | Found::NonDir(md) => {
                    return Some(Entry::from_md(&md, real))
                }
            }
        }
        None
    }

    /// The merged listing of directory `rel` (empty when it is not a directory).
    pub fn read_dir(&self, rel: &Path) -> BTreeMap<OsString, Entry> {
        let mut out = BTreeMap::new();
        let mut hidden = std::collections::HashSet::new();
        for i in self.dir_layers(rel).unwrap_or_default() {
            let dir = self.dirs[i].join(rel);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                if out.contains_key(&name) || hidden.contains(&name) {
                    continue;
                }
                let real = e.path();
                match fs::symlink_metadata(&real) {
                    Ok(md) if is_whiteout(&md) => {
                        hidden.insert(name);
                    }
                    Ok(md) => {
                        out.insert(name, Entry::from_md(&md, real));
                    }
                    Err(_) => {}
                }
            }
        }
        out
    }
}

/// Every path inside one layer directory, with whether the layer replaces the whole
/// subtree below it (whiteouts, opaque directories and non-directories may hide lower
/// content that the layer itself does not list).
pub fn layer_paths(layer: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) {
        let Ok(rd) = fs::read_dir(root.join(rel)) else {
            return;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let Ok(md) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if md.is_dir() {
                out.push((r.clone(), is_opaque(&e.path())));
                walk(root, &r, out);
            } else {
                out.push((r, true));
            }
        }
    }
    walk(layer, Path::new(""), &mut out);
    out
}
