//! Model-based property test of DeltaFS: random file operations interleaved with
//! checkpoints and restores to random nodes, compared byte for byte and metadata for
//! metadata against an in-memory model. Runs real sandboxes (overlayfs, namespaces).

mod common;
use common::*;
use deltabox_sandbox::{ExecOptions, Manager};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Link { target: String },
}

type Model = BTreeMap<String, Node>;

#[derive(Debug, Clone)]
enum Op {
    Write(usize, Vec<u8>),
    Append(usize, Vec<u8>),
    Truncate(usize, usize),
    Rename(usize, usize),
    Unlink(usize),
    Mkdir(usize),
    Rmdir(usize),
    Symlink(usize, usize),
    Chmod(usize, u32),
    Big(usize, u32),
    Checkpoint,
    Restore(usize),
}

const ROOT: &str = "/tmp/m";
const NAMES: &[&str] = &[
    "a", "b", "d1", "d2", "d1/x", "d1/y", "d2/z", "d1/sub", "d1/sub/q", "big",
];

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    let data = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        4 => (n.clone(), data.clone()).prop_map(|(i, d)| Op::Write(i, d)),
        2 => (n.clone(), data).prop_map(|(i, d)| Op::Append(i, d)),
        1 => (n.clone(), 0..80usize).prop_map(|(i, l)| Op::Truncate(i, l)),
        2 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => n.clone().prop_map(Op::Unlink),
        3 => n.clone().prop_map(Op::Mkdir),
        1 => n.clone().prop_map(Op::Rmdir),
        1 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Symlink(a, b)),
        1 => (n.clone(), prop_oneof![Just(0o600u32), Just(0o755), Just(0o644), Just(0o700)]).prop_map(|(i, m)| Op::Chmod(i, m)),
        1 => (n, 1u32..4).prop_map(|(i, mb)| Op::Big(i, mb)),
        3 => Just(Op::Checkpoint),
        3 => any::<prop::sample::Index>().prop_map(|i| Op::Restore(i.index(1 << 20))),
    ]
}

fn parent(p: &str) -> Option<&str> {
    p.rfind('/').map(|i| &p[..i])
}

fn parent_is_dir(m: &Model, p: &str) -> bool {
    parent(p).is_none_or(|d| matches!(m.get(d), Some(Node::Dir { .. })))
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("\\x{b:02x}")).collect()
}

fn big_data(mb: u32, seed: usize) -> Vec<u8> {
    (0..(mb as usize) << 20)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

/// Applies `op` to the model and returns the shell command doing the same, or `None`
/// when the operation does not apply to the current state (the model stays valid).
fn apply(m: &mut Model, op: &Op) -> Option<String> {
    let p = |i: &usize| NAMES[*i].to_string();
    let q = |s: &str| format!("'{ROOT}/{s}'");
    match op {
        Op::Write(i, d) | Op::Append(i, d) => {
            let path = p(i);
            if !parent_is_dir(m, &path) {
                return None;
            }
            let append = matches!(op, Op::Append(..));
            match m.get_mut(&path) {
                Some(Node::File { data, .. }) => {
                    if append {
                        data.extend_from_slice(d)
                    } else {
                        *data = d.clone()
                    }
                }
                None => {
                    m.insert(
                        path.clone(),
                        Node::File {
                            data: d.clone(),
                            mode: 0o644,
                        },
                    );
                }
                _ => return None,
            }
            Some(format!(
                "printf '{}' {} {}",
                hex(d),
                if append { ">>" } else { ">" },
                q(&path)
            ))
        }
        Op::Truncate(i, l) => {
            let path = p(i);
            let Some(Node::File { data, .. }) = m.get_mut(&path) else {
                return None;
            };
            data.resize(*l, 0);
            Some(format!("truncate -s {l} {}", q(&path)))
        }
        Op::Rename(a, b) => {
            let (pa, pb) = (p(a), p(b));
            if pa == pb
                || !m.contains_key(&pa)
                || m.contains_key(&pb)
                || !parent_is_dir(m, &pb)
                || pb.starts_with(&format!("{pa}/"))
            {
                return None;
            }
            let moved: Vec<(String, Node)> = m
                .range(pa.clone()..)
                .take_while(|(k, _)| **k == pa || k.starts_with(&format!("{pa}/")))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in moved {
                m.remove(&k);
                m.insert(format!("{pb}{}", &k[pa.len()..]), v);
            }
            Some(format!("mv -T {} {}", q(&pa), q(&pb)))
        }
        Op::Unlink(i) => {
            let path = p(i);
            match m.get(&path) {
                Some(Node::File { .. }) | Some(Node::Link { .. }) => {
                    m.remove(&path);
                    Some(format!("rm {}", q(&path)))
                }
                _ => None,
            }
        }
        Op::Mkdir(i) => {
            let path = p(i);
            if m.contains_key(&path) || !parent_is_dir(m, &path) {
                return None;
            }
            m.insert(path.clone(), Node::Dir { mode: 0o755 });
            Some(format!("mkdir {}", q(&path)))
        }
        Op::Rmdir(i) => {
            let path = p(i);
            let empty = !m.keys().any(|k| k.starts_with(&format!("{path}/")));
            if !matches!(m.get(&path), Some(Node::Dir { .. })) || !empty {
                return None;
            }
            m.remove(&path);
            Some(format!("rmdir {}", q(&path)))
        }
        Op::Symlink(a, b) => {
            let (target, link) = (p(a), p(b));
            if m.contains_key(&link) || !parent_is_dir(m, &link) {
                return None;
            }
            m.insert(
                link.clone(),
                Node::Link {
                    target: target.clone(),
                },
            );
            Some(format!("ln -s '{target}' {}", q(&link)))
        }
        Op::Chmod(i, mode) => {
            let path = p(i);
            match m.get_mut(&path) {
                Some(Node::File { mode: mm, .. }) | Some(Node::Dir { mode: mm }) => *mm = *mode,
                _ => return None,
            }
            Some(format!("chmod {mode:o} {}", q(&path)))
        }
        Op::Big(i, mb) => {
            let path = p(i);
            if !parent_is_dir(m, &path)
                || matches!(
                    m.get(&path),
                    Some(Node::Dir { .. }) | Some(Node::Link { .. })
                )
            {
                return None;
            }
            // `>` truncates an existing file and keeps its mode.
            let mode = match m.get(&path) {
                Some(Node::File { mode, .. }) => *mode,
                _ => 0o644,
            };
            m.insert(
                path.clone(),
                Node::File {
                    data: big_data(*mb, *i),
                    mode,
                },
            );
            Some(format!("python3 -c \"import sys; sys.stdout.buffer.write(bytes(((i*31+{i}*7)%251) for i in range({mb}<<20)))\" > {}", q(&path)))
        }
        Op::Checkpoint | Op::Restore(_) => unreachable!(),
    }
}

/// The model as the listing the sandbox prints (see `LIST`).
fn render(m: &Model) -> String {
    let mut out = String::new();
    for (k, v) in m {
        let line = match v {
            Node::File { data, mode } => {
                format!("f {mode:o} {} {k} {:x}", data.len(), Sha256::digest(data))
            }
            Node::Dir { mode } => format!("d {mode:o} {k}"),
            Node::Link { target } => format!("l {k} -> {target}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Lists the tree under ROOT with type, permissions, size, and content hash.
const LIST: &str = r#"cd /tmp/m && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r p; do
  if [ -L "$p" ]; then echo "l $p -> $(readlink "$p")";
  elif [ -d "$p" ]; then echo "d $(stat -c %a "$p") $p";
  else echo "f $(stat -c '%a %s' "$p") $p $(sha256sum < "$p" | cut -d' ' -f1)"; fi; done"#;

fn sh(mgr: &Manager, sb: &str, cmd: &str) -> String {
    let o = mgr.exec(sb, cmd, &ExecOptions::default()).unwrap();
    assert_eq!(
        o.exit_code,
        0,
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn check_ops(mgr: &Arc<Manager>, ops: &[Op]) -> Result<(), TestCaseError> {
    let sb = mgr.create(Default::default()).unwrap().id;
    sh(mgr, &sb, &format!("mkdir -p {ROOT}"));
    let mut model = Model::new();
    let mut nodes: Vec<(String, Model)> = Vec::new();
    for op in ops {
        match op {
            Op::Checkpoint => {
                let ck = mgr.checkpoint(&sb, None).unwrap();
                nodes.push((ck.id, model.clone()));
            }
            Op::Restore(i) => {
                if nodes.is_empty() {
                    continue;
                }
                let (ck, m) = nodes[i % nodes.len()].clone();
                mgr.restore(&sb, &ck, false).unwrap();
                model = m;
                prop_assert_eq!(
                    sh(mgr, &sb, LIST),
                    render(&model),
                    "after restore to {}",
                    ck
                );
            }
            other => {
                if let Some(cmd) = apply(&mut model, other) {
                    sh(mgr, &sb, &cmd);
                }
            }
        }
    }
    prop_assert_eq!(sh(mgr, &sb, LIST), render(&model));
    // Every node still restores exactly, in reverse order.
    for (ck, m) in nodes.iter().rev() {
        mgr.restore(&sb, ck, false).unwrap();
        prop_assert_eq!(sh(mgr, &sb, LIST), render(m), "final sweep, {}", ck);
    }
    mgr.remove(&sb).unwrap();
    mgr.gc().unwrap();
    Ok(())
}

#[test]
fn files_match_the_model_across_checkpoints_and_restores() {
    let store = Store::new(8 << 30);
    let mgr = Arc::new(store.manager());
    let config = ProptestConfig {
        cases: 64,
        max_shrink_iters: 50,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&proptest::collection::vec(op(), 10..60), |ops| {
            check_ops(&mgr, &ops)
        })
        .unwrap();
    drop(mgr);
}

/// 200 checkpoints on one path (squashed as it grows), restored from the far end, the
/// root and the middle, each exactly.
#[test]
fn deep_chain_restores_from_both_ends() {
    let store = Store::new(8 << 30);
    let mgr = &Arc::new(store.manager());
    let sb = mgr.create(Default::default()).unwrap().id;
    sh(mgr, &sb, "mkdir -p /srv/chain");
    let mut cks = Vec::new();
    for i in 0..200 {
        sh(
            mgr,
            &sb,
            &format!(
                "cd /srv/chain && echo {i} > f{} && echo {i} >> log && rm -f f{}",
                i % 7,
                (i + 3) % 7
            ),
        );
        cks.push(mgr.checkpoint(&sb, None).unwrap());
    }
    let max_depth = cks.iter().map(|c| c.depth).max().unwrap();
    assert!(
        max_depth <= 2 * deltabox_layerstore::MAX_STACK_DEPTH + 1,
        "stack depth {max_depth} was never squashed"
    );
    let expect = |i: usize| {
        let mut files = BTreeMap::new();
        for k in 0..=i {
            files.insert(format!("f{}", k % 7), k);
            files.remove(&format!("f{}", (k + 3) % 7));
        }
        let log: String = (0..=i).map(|k| format!("{k}\n")).collect();
        let listing: String = files.iter().map(|(f, v)| format!("{f}:{v}\n")).collect();
        format!("{listing}{log}")
    };
    let show = "cd /srv/chain && for f in $(ls f* 2>/dev/null | sort); do echo \"$f:$(cat $f)\"; done; cat log";
    for i in [199usize, 0, 100, 199, 23, 24, 25, 0] {
        mgr.restore(&sb, &cks[i].id, false).unwrap();
        assert_eq!(sh(mgr, &sb, show), expect(i), "checkpoint #{i}");
    }
    // The squashed stacks are what checkpoints now stand on; their records say so.
    let rec = mgr.checkpoint_record(&cks[199].id).unwrap();
    assert!(
        rec.layers.len() <= 2 * deltabox_layerstore::MAX_STACK_DEPTH + 1,
        "{}",
        rec.layers.len()
    );
    mgr.remove(&sb).unwrap();
}
