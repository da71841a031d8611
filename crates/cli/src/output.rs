//! Each subcommand: one API call, then human or JSON output.

use crate::client::Client;
use crate::{Cli, Cmd};
use anyhow::{bail, Result};
use deltabox_api as api;
use serde::Serialize;
use std::io::Write;

fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub async fn dispatch(cli: Cli) -> Result<i32> {
    let client = Client {
        socket: cli.socket.clone(),
    };
    client.ensure_daemon(&cli.root).await?;
    let json = cli.json;
    let none: Option<&()> = None;
    match cli.cmd {
        Cmd::Doctor => {
            let checks: Vec<api::Check> = client.call("GET", "/v1/doctor", none).await?;
            if json {
                print_json(&checks);
            } else {
                for c in &checks {
                    let mark = match c.status.as_str() {
                        "ok" => "ok     ",
                        "missing" => "MISSING",
                        _ => "       ",
                    };
                    println!("{mark}  {:<16} {}", c.name, c.detail);
                }
            }
        }
        Cmd::Create {
            base,
            net,
            shell,
            owner_pid,
        } => {
            let req = api::CreateRequest {
                base: base.map(|b| b.display().to_string()),
                net,
                shell: Some(shell),
                owner_pid,
            };
            let sb: api::Sandbox = client.call("POST", "/v1/sandboxes", Some(&req)).await?;
            if json {
                print_json(&sb);
            } else {
                println!("{}", sb.id);
            }
        }
        Cmd::Pool { checkpoint, size } => {
            let url = format!("/v1/checkpoints/{checkpoint}/pool");
            let r: api::PoolResponse = client
                .call("POST", &url, Some(&api::PoolRequest { size }))
                .await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "warm pool of {}: {} children, {} ready now",
                    r.checkpoint, r.size, r.ready
                );
            }
        }
        Cmd::Fork {
            checkpoint,
            n,
            owner_pid,
        } => {
            let req = api::ForkRequest { n, owner_pid };
            let url = format!("/v1/checkpoints/{checkpoint}/fork");
            let r: api::ForkResponse = client.call("POST", &url, Some(&req)).await?;
            if json {
                print_json(&r);
            } else {
                for id in &r.ids {
                    println!("{id}");
                }
                eprintln!(
                    "forked {} sandbox(es) from {} in {:.1} ms (each: p50 {:.2} ms, p99 {:.2} ms)",
                    r.ids.len(),
                    r.checkpoint,
                    r.ms_total,
                    r.ms_p50,
                    r.ms_p99
                );
            }
        }
        Cmd::Exec {
            sandbox,
            timeout,
            max_output,
            command,
        } => {
            let req = api::ExecRequest {
                command: command.join(" "),
                timeout_ms: timeout.map(|t| (t * 1000.0) as u64),
                max_output_bytes: max_output,
            };
            let r: api::ExecResponse = client
                .call("POST", &format!("/v1/sandboxes/{sandbox}/exec"), Some(&req))
                .await?;
            if json {
                print_json(&r);
            } else {
                std::io::stdout().write_all(r.stdout.as_bytes())?;
                std::io::stderr().write_all(r.stderr.as_bytes())?;
                if r.truncated {
                    eprintln!(
                        "deltabox: output truncated: stdout {} bytes, stderr {} bytes written, {} and {} kept (raise --max-output)",
                        r.stdout_bytes,
                        r.stderr_bytes,
                        r.stdout.len(),
                        r.stderr.len()
                    );
                }
                if r.timed_out {
                    eprintln!(
                        "deltabox: the command timed out after {:.1} s and was killed ({} process(es)); the shell {}",
                        r.duration_ms / 1000.0,
                        r.killed,
                        if r.shell_restarted { "had to be restarted: shell state was reset" } else { "survives with its state" }
                    );
                } else if r.shell_restarted {
                    eprintln!("deltabox: the shell exited during the command and was restarted: cwd, variables and functions were reset");
                }
            }
            return Ok(r.exit_code);
        }
        Cmd::Checkpoint { sandbox, label } => {
            let req = api::CheckpointRequest { label };
            let c: api::CheckpointCreated = client
                .call(
                    "POST",
                    &format!("/v1/sandboxes/{sandbox}/checkpoints"),
                    Some(&req),
                )
                .await?;
            if json {
                print_json(&c);
            } else {
                println!("{}  ({:.2} ms)", c.id, c.ms);
            }
        }
        Cmd::Restore {
            sandbox,
            checkpoint,
            files_only,
        } => {
            let req = api::RestoreRequest {
                checkpoint,
                files_only,
            };
            let r: api::RestoreResponse = client
                .call(
                    "POST",
                    &format!("/v1/sandboxes/{sandbox}/restore"),
                    Some(&req),
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "restored {} to {}  ({:.2} ms)",
                    r.sandbox, r.checkpoint, r.ms
                );
            }
        }
        Cmd::Diff { from, to, patch } => {
            let d: api::DiffResponse = client
                .call(
                    "GET",
                    &format!("/v1/diff?from={from}&to={to}&patch={patch}"),
                    none,
                )
                .await?;
            if json {
                print_json(&d);
            } else if patch {
                print!("{}", d.patch.unwrap_or_default());
            } else {
                for c in &d.changes {
                    let m = match c.change.as_str() {
                        "added" => "A",
                        "deleted" => "D",
                        _ => "M",
                    };
                    let what = if c.what.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", c.what.join(", "))
                    };
                    let slash = if c.kind == "dir" { "/" } else { "" };
                    println!("{m} {}{slash}{what}", c.path);
                }
            }
        }
        Cmd::Tree { sandbox } => {
            let nodes: Vec<api::TreeNode> = client
                .call("GET", &format!("/v1/sandboxes/{sandbox}/tree"), none)
                .await?;
            if json {
                print_json(&nodes);
            } else {
                print_tree(&sandbox, &nodes);
            }
        }
        Cmd::Ls => {
            let sbs: Vec<api::Sandbox> = client.call("GET", "/v1/sandboxes", none).await?;
            let usage: api::Usage = client.call("GET", "/v1/usage", none).await?;
            if json {
                print_json(&sbs);
            } else {
                println!(
                    "{:<16} {:<8} {:>6} {:<16} {:<5} BASE",
                    "SANDBOX", "STATE", "CKPTS", "HEAD", "NET"
                );
                for s in &sbs {
                    let state = s.state.split(':').next().unwrap_or("");
                    println!(
                        "{:<16} {:<8} {:>6} {:<16} {:<5} {}",
                        s.id,
                        state,
                        s.checkpoints,
                        s.head.as_deref().unwrap_or("-"),
                        s.net,
                        s.base
                    );
                }
                let health: api::Health = client.call("GET", "/v1/health", none).await?;
                println!(
                    "{} sandbox(es), {} checkpoint(s), {} layer(s) using {}; process templates hold {} private ({} rss, shared)",
                    usage.sandboxes,
                    usage.checkpoints,
                    usage.layers,
                    mb(usage.bytes),
                    mb(health.template_memory.private),
                    mb(health.template_memory.rss)
                );
            }
        }
        Cmd::Rm { ids } => {
            let mut out = Vec::new();
            for id in ids {
                let path = if id.starts_with("ck-") {
                    format!("/v1/checkpoints/{id}")
                } else if id.starts_with("sb-") {
                    format!("/v1/sandboxes/{id}")
                } else {
                    bail!("{id:?} is neither a sandbox id (sb-…) nor a checkpoint id (ck-…); see `deltabox ls` and `deltabox tree SANDBOX`");
                };
                let r: serde_json::Value = client.call("DELETE", &path, none).await?;
                if !json {
                    println!("removed {id}");
                }
                out.push(r);
            }
            if json {
                print_json(&out);
            }
        }
        Cmd::Gc => {
            let r: api::GcResponse = client.call("POST", "/v1/gc", none).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "removed {} layer(s) and {} work dir(s), freed {}",
                    r.layers_removed,
                    r.work_dirs_removed,
                    mb(r.bytes_freed)
                );
            }
        }
        Cmd::Daemon | Cmd::Init { .. } | Cmd::Reaper { .. } | Cmd::Bench { .. } => {
            unreachable!("handled in main")
        }
    }
    Ok(0)
}

fn print_tree(sandbox: &str, nodes: &[api::TreeNode]) {
    println!("{sandbox}");
    let ids: std::collections::HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let roots: Vec<&api::TreeNode> = nodes
        .iter()
        .filter(|n| n.parent.as_deref().is_none_or(|p| !ids.contains(p)))
        .collect();
    fn walk(n: &api::TreeNode, all: &[api::TreeNode], prefix: &str, last: bool) {
        let mut line = format!("{prefix}{}{}", if last { "└── " } else { "├── " }, n.id);
        if let Some(l) = &n.label {
            line.push_str(&format!(" \"{l}\""));
        }
        if n.removed {
            line.push_str(" [removed]");
        } else {
            line.push_str(&format!("  {:.2} ms, {} layer(s)", n.ms, n.depth));
            match &n.template {
                Some(t) => line.push_str(&format!(
                    ", template pid {} ({} private, {} rss)",
                    t.pid,
                    mb(t.memory.private),
                    mb(t.memory.rss)
                )),
                None => line.push_str(", no template (files only)"),
            }
        }
        if n.head {
            line.push_str("  <- head");
        }
        println!("{line}");
        let kids: Vec<&api::TreeNode> = all
            .iter()
            .filter(|c| c.parent.as_deref() == Some(n.id.as_str()))
            .collect();
        let p = format!("{prefix}{}", if last { "    " } else { "│   " });
        for (i, k) in kids.iter().enumerate() {
            walk(k, all, &p, i + 1 == kids.len());
        }
    }
    for (i, r) in roots.iter().enumerate() {
        walk(r, nodes, "", i + 1 == roots.len());
    }
}

/// `deltabox bench`: progress on stderr, the table (or JSON) on stdout.
/// Builds (first time: ~3 min from PyPI) or finds the bench workload.
pub fn workload(dir: &std::path::Path, json: bool) -> Result<i32> {
    let w = deltabox_bench::workload::ensure(dir)?;
    if json {
        print_json(&w);
    } else {
        println!(
            "Django checkout {} ({} files, {:.1} MB; releases {}), virtualenv python {}",
            w.repo.display(),
            w.files,
            w.bytes as f64 / 1e6,
            w.versions.join(", "),
            w.python.display()
        );
    }
    Ok(0)
}

pub fn bench(args: BenchArgs, json: bool) -> Result<i32> {
    let exe = std::env::current_exe()?;
    let mut opts = deltabox_bench::Options::new(args.quick, args.dir, exe);
    if let Some(r) = args.reps {
        opts.reps = r.max(2);
    }
    if let Some(r) = args.baseline_reps {
        opts.baseline_reps = r.max(1);
    }
    if args.llm_min <= 0.0 || args.llm_max < args.llm_min {
        bail!(
            "bad LLM latency model: --llm-min {} --llm-max {} (need 0 < min <= max, in seconds)",
            args.llm_min,
            args.llm_max
        );
    }
    opts.llm_s = (args.llm_min, args.llm_max);
    let start = std::time::Instant::now();
    opts.progress = Box::new(move |msg| {
        eprintln!("[{:>6.1}s] {msg}", start.elapsed().as_secs_f64());
    });
    let r = deltabox_bench::run(&opts)?;
    if let Some(dir) = &args.report {
        deltabox_bench::report::write(&r, dir)?;
        eprintln!("report: {}", dir.join("report.md").display());
    }
    if json {
        print_json(&r);
    } else {
        print!("{}", deltabox_bench::report::table(&r));
    }
    Ok(0)
}

/// Options of `deltabox bench`.
pub struct BenchArgs {
    pub quick: bool,
    pub reps: Option<usize>,
    pub baseline_reps: Option<usize>,
    pub dir: std::path::PathBuf,
    pub report: Option<std::path::PathBuf>,
    pub llm_min: f64,
    pub llm_max: f64,
}
