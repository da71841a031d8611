//! `deltabox`: the command-line interface. It talks to the daemon over its Unix socket
//! (starting it when needed); `deltabox daemon` runs the daemon itself.

mod client;
mod output;

use anyhow::Result;
use clap::{Parser, Subcommand};
use client::ApiFailure;
use deltabox_api as api;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "deltabox",
    version,
    about = "Millisecond checkpoint, rollback and fork for AI-agent sandboxes"
)]
struct Cli {
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,
    /// The daemon's socket.
    #[arg(long, global = true, env = api::SOCKET_ENV, default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The layer store (used when this command starts the daemon).
    #[arg(long, global = true, env = api::ROOT_ENV, default_value = api::DEFAULT_ROOT)]
    root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Report the kernel features DeltaBox uses and whether this machine has them.
    Doctor,
    /// Run the daemon in the foreground.
    Daemon,
    /// Create a sandbox (default base: the host's root, read-only).
    Create {
        /// A directory tree to use as the sandbox's root filesystem.
        #[arg(long)]
        base: Option<PathBuf>,
        /// Share the host's network (default: no network, loopback only).
        #[arg(long)]
        net: bool,
        /// The persistent session: bash, or a Python REPL whose heap checkpoints keep.
        #[arg(long, default_value = "bash", value_parser = ["bash", "python"])]
        shell: String,
        /// Lease the sandbox to this process: the daemon removes it when the process
        /// exits (e.g. `--owner-pid $$` ties it to the calling script).
        #[arg(long)]
        owner_pid: Option<i32>,
    },
    /// Run a command in the sandbox's persistent shell.
    Exec {
        sandbox: String,
        /// Kill the command after this many seconds (the shell survives).
        #[arg(long)]
        timeout: Option<f64>,
        /// Bytes of stdout and of stderr to keep (each).
        #[arg(long)]
        max_output: Option<usize>,
        /// The command (joined with spaces; bash or Python source, per the sandbox's shell).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Checkpoint the sandbox: its files and its shell process.
    Checkpoint {
        sandbox: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// Restore the sandbox to a checkpoint (files and shell; running processes are killed).
    Restore {
        sandbox: String,
        checkpoint: String,
        /// Restore the files alone and start a fresh shell (the way to restore a
        /// checkpoint whose process template is gone, e.g. after a daemon restart).
        #[arg(long)]
        files_only: bool,
    },
    /// Paths added, modified and deleted between two checkpoints.
    Diff {
        from: String,
        to: String,
        /// Print a unified diff (git apply / patch -p1) instead of a list.
        #[arg(long)]
        patch: bool,
    },
    /// Show the checkpoint tree of a sandbox.
    Tree { sandbox: String },
    /// List sandboxes.
    Ls,
    /// New sandboxes that start exactly at a checkpoint (files and shell), each with its
    /// own writable layer and namespaces.
    Fork {
        checkpoint: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 1)]
        n: usize,
        /// Lease them to this process (see `create --owner-pid`).
        #[arg(long)]
        owner_pid: Option<i32>,
    },
    /// Keep SIZE children of a checkpoint pre-forked, so that `fork` hands them out at
    /// once (0 empties the pool). Each waiting child costs its page tables and a few
    /// small processes (see README).
    Pool { checkpoint: String, size: usize },
    /// Remove sandboxes or checkpoints (by id).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete layers that no checkpoint or sandbox needs.
    Gc,
    /// Measure DeltaBox and the baselines side by side on a real workload (Django from
    /// PyPI, built on first use). Runs in-process on a private layer store: no daemon.
    Bench {
        /// A smoke run: fewer repetitions.
        #[arg(long)]
        quick: bool,
        /// Repetitions of each DeltaBox operation (default 100, 20 with --quick).
        #[arg(long)]
        reps: Option<usize>,
        /// Repetitions of each slow baseline operation (default 50, 1 with --quick).
        #[arg(long)]
        baseline_reps: Option<usize>,
        /// Where the workload and the bench's store live.
        #[arg(long, default_value = "/var/tmp/deltabox-bench")]
        dir: PathBuf,
        /// Also write DIR/report.md, report.json and PNG latency CDFs.
        #[arg(long)]
        report: Option<PathBuf>,
        /// LLM latency model of the search overhead: uniform in [min, max] seconds.
        #[arg(long, default_value_t = 1.0)]
        llm_min: f64,
        #[arg(long, default_value_t = 20.0)]
        llm_max: f64,
        /// Only build (or find) the workload and print where it is; measure nothing.
        #[arg(long)]
        workload_only: bool,
    },
    #[command(name = "__init", hide = true)]
    Init { config: String },
    #[command(name = "__reaper", hide = true)]
    Reaper { supervisor: i32 },
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::Init { config } = &cli.cmd {
        deltabox_sandbox::init::init_main(config);
    }
    if let Cmd::Reaper { supervisor } = &cli.cmd {
        deltabox_sandbox::init::reaper_main(*supervisor);
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deltabox: error: {e:#}");
            match e.downcast_ref::<ApiFailure>() {
                Some(f) if f.status == 404 => 3,
                Some(_) => 2,
                None => 1,
            }
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Cmd::Bench {
        quick,
        reps,
        baseline_reps,
        dir,
        report,
        llm_min,
        llm_max,
        workload_only,
    } = &cli.cmd
    {
        if *workload_only {
            return output::workload(dir, cli.json);
        }
        let args = output::BenchArgs {
            quick: *quick,
            reps: *reps,
            baseline_reps: *baseline_reps,
            dir: dir.clone(),
            report: report.clone(),
            llm_min: *llm_min,
            llm_max: *llm_max,
        };
        return output::bench(args, cli.json);
    }
    if let Cmd::Daemon = cli.cmd {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_writer(std::io::stderr)
            .init();
        let cfg = deltabox_daemon::DaemonConfig {
            socket: cli.socket,
            root: cli.root,
            init_exe: std::env::current_exe()?,
        };
        rt.block_on(deltabox_daemon::run(cfg))?;
        return Ok(0);
    }
    rt.block_on(output::dispatch(cli))
}
