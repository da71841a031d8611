//! Overlay semantics in userspace: views, diff and squash on hand-built layers (whiteouts
//! need CAP_MKNOD, opaque xattrs need CAP_SYS_ADMIN: run as root).

use crate::fsutil::{set_xattr, OPAQUE_XATTR};
use crate::{diff_views, render_patch, squash_layers, ChangeKind, EntryKind, View};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn whiteout(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
}

/// base: a/1 a/2 d/x keep;  l1: a/2' n/f, keep deleted;  l2: d opaque with y, a/1 deleted, new.
fn layers(t: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (base, l1, l2) = (t.join("base"), t.join("l1"), t.join("l2"));
    write(&base.join("a/1"), "base1");
    write(&base.join("a/2"), "base2");
    write(&base.join("d/x"), "x");
    write(&base.join("keep"), "k");
    write(&l1.join("a/2"), "l1");
    write(&l1.join("n/f"), "f");
    whiteout(&l1.join("keep"));
    write(&l2.join("d/y"), "y");
    set_xattr(&l2.join("d"), OPAQUE_XATTR, b"y").unwrap();
    whiteout(&l2.join("a/1"));
    write(&l2.join("new"), "new");
    (base, l1, l2)
}

/// Every visible path with its kind and content.
fn flatten(v: &View) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(v: &View, rel: &Path, out: &mut BTreeMap<String, String>) {
        for (name, e) in v.read_dir(rel) {
            let r = rel.join(&name);
            let val = match e.kind {
                EntryKind::File => fs::read_to_string(&e.real).unwrap(),
                EntryKind::Dir => {
                    walk(v, &r, out);
                    format!("dir {:o}", e.mode)
                }
                k => format!("{k:?}"),
            };
            out.insert(r.display().to_string(), val);
        }
    }
    walk(v, Path::new(""), &mut out);
    out
}

#[test]
fn view_follows_overlay_rules() {
    let t = tempfile::tempdir().unwrap();
    let (base, l1, l2) = layers(t.path());
    let v = View::new(vec![l2, l1, base]);
    let got: Vec<String> = flatten(&v)
        .into_iter()
        .filter(|(_, c)| !c.starts_with("dir"))
        .map(|(k, c)| format!("{k}={c}"))
        .collect();
    assert_eq!(got, ["a/2=l1", "d/y=y", "n/f=f", "new=new"]);
    assert!(v.lookup(Path::new("a/1")).is_none());
    assert!(
        v.lookup(Path::new("d/x")).is_none(),
        "opaque directory hides lower entries"
    );
    assert!(v.lookup(Path::new("keep/nothing")).is_none());
    assert_eq!(v.lookup(Path::new("a")).unwrap().kind, EntryKind::Dir);
}

#[test]
fn diff_lists_changes_and_renders_a_patch() {
    let t = tempfile::tempdir().unwrap();
    let (base, l1, l2) = layers(t.path());
    let old = View::new(vec![l1.clone(), base.clone()]);
    let new = View::new(vec![l2, l1, base]);
    let changes = diff_views(&old, &new);
    let got: Vec<(String, ChangeKind)> =
        changes.iter().map(|c| (c.path.clone(), c.change)).collect();
    assert_eq!(
        got,
        [
            ("/a/1".to_string(), ChangeKind::Deleted),
            ("/d/x".to_string(), ChangeKind::Deleted),
            ("/d/y".to_string(), ChangeKind::Added),
            ("/new".to_string(), ChangeKind::Added),
        ]
    );
    let patch = render_patch(&changes);
    assert!(
        patch.contains("--- a/a/1\n+++ /dev/null\n@@ -1 +0,0 @@\n-base1"),
        "{patch}"
    );
    assert!(patch.contains("+++ b/new"), "{patch}");
    assert!(diff_views(&new, &new).is_empty());
}

#[test]
fn squash_preserves_the_view_over_any_lower() {
    let t = tempfile::tempdir().unwrap();
    let (base, l1, l2) = layers(t.path());
    let s = t.path().join("s");
    fs::create_dir(&s).unwrap();
    squash_layers(&[l2.clone(), l1.clone()], &s).unwrap();
    assert_eq!(
        flatten(&View::new(vec![s.clone(), base.clone()])),
        flatten(&View::new(vec![l2, l1, base]))
    );
    // The merged layer keeps hiding what lies below it.
    assert!(crate::fsutil::is_opaque(&s.join("d")));
}
