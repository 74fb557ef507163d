//! `tether put` and `tether get`: files over VSOA streams (tether::transfer), SHA-256
//! checked on both ends, resumed after a broken connection. Progress goes to stderr: a bar
//! with rate and ETA on a terminal, a plain line per second otherwise. The result is one
//! JSON line on stdout.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ConnectArgs, Failure};

#[derive(clap::Args)]
pub(crate) struct PutArgs {
    /// The local file to send.
    file: PathBuf,
    /// Where to: vsoa://HOST:PORT/files/NAME (any path under a server's file service).
    #[arg(value_parser = super::parse_route_url)]
    url: tether::VsoaUrl,
    #[command(flatten)]
    opts: TransferOpts,
}

#[derive(clap::Args)]
pub(crate) struct GetArgs {
    /// What to fetch: vsoa://HOST:PORT/files/NAME.
    #[arg(value_parser = super::parse_route_url)]
    url: tether::VsoaUrl,
    /// The local file to write (default: the URL's last part, in the current directory).
    /// A partial copy from a broken download is kept beside it and resumed.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    opts: TransferOpts,
}

#[derive(clap::Args)]
struct TransferOpts {
    /// Further attempts after the connection breaks; each resumes where the last stopped.
    #[arg(long, value_name = "N", default_value = "3")]
    retries: u32,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(Clone, Copy)]
enum Direction {
    Put,
    Get,
}

pub(crate) async fn put(args: PutArgs) -> Result<(), Failure> {
    if let Err(e) = std::fs::File::open(&args.file) {
        return Err(Failure {
            message: format!("cannot read {}: {e}", args.file.display()),
            code: crate::cmd::exit::OTHER,
        });
    }
    transfer(Direction::Put, &args.url, &args.file, &args.opts).await
}

pub(crate) async fn get(args: GetArgs) -> Result<(), Failure> {
    let output = match args.output {
        Some(o) => o,
        None => match args.url.path.rsplit('/').next().filter(|n| !n.is_empty()) {
            Some(name) => PathBuf::from(name),
            None => {
                return Err(Failure::usage(
                    "the URL names no file; give the output file with -o",
                ))
            }
        },
    };
    transfer(Direction::Get, &args.url, &output, &args.opts).await
}

async fn transfer(
    dir: Direction,
    url: &tether::VsoaUrl,
    local: &Path,
    opts: &TransferOpts,
) -> Result<(), Failure> {
    let full_url = format!("{url}{}", url.path);
    let label = match dir {
        Direction::Put => format!("put {} -> {full_url}", local.display()),
        Direction::Get => format!("get {full_url} -> {}", local.display()),
    };
    let mut progress = Progress::new(&label, opts.quiet);
    let mut attempt = 0;
    let done = loop {
        let outcome = async {
            let client = opts.conn.connect(url).await?;
            let mut report = |done, total| progress.update(done, total);
            let res = match dir {
                Direction::Put => {
                    tether::transfer::put(&client, &url.path, local, &mut report).await
                }
                Direction::Get => {
                    tether::transfer::get(&client, &url.path, local, &mut report).await
                }
            };
            client.close().await;
            res.map_err(Failure::from)
        }
        .await;
        match outcome {
            Ok(done) => break done,
            // A lost connection or a timeout (exit codes 3 and 5): the next attempt resumes.
            Err(failure) if attempt < opts.retries && matches!(failure.code, 3 | 5) => {
                attempt += 1;
                progress.note(&format!(
                    "{}; resuming (attempt {} of {})",
                    failure.message,
                    attempt + 1,
                    opts.retries + 1
                ));
                tokio::time::sleep(Duration::from_millis(500) * attempt).await;
            }
            Err(failure) => {
                progress.abandon();
                return Err(failure);
            }
        }
    };
    progress.finish();
    crate::output::print_line(
        &serde_json::json!({
            "url": full_url,
            "file": local.display().to_string(),
            "size": done.size,
            "sha256": done.sha256,
            "resumed_from": done.resumed_from,
        })
        .to_string(),
    );
    Ok(())
}

/// Progress on stderr: indicatif's bar on a terminal, else a plain line at most once a
/// second (and at the end).
struct Progress {
    label: String,
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    started: Instant,
    last_line: Option<Instant>,
    last: (u64, u64),
}

impl Progress {
    fn new(label: &str, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            bar,
            quiet,
            started: Instant::now(),
            last_line: None,
            last: (0, 0),
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        self.last = (done, total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        if self.quiet
            || self
                .last_line
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        self.line();
    }

    fn line(&self) {
        let (done, total) = self.last;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        eprintln!(
            "tether: {}: {} of {} ({pct:.0}%), {}/s",
            self.label,
            mib(done),
            mib(total),
            mib((done as f64 / secs) as u64)
        );
    }

    fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("tether: {message}")),
            None => eprintln!("tether: {message}"),
        }
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None if !self.quiet => self.line(),
            None => {}
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
