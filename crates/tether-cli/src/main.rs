//! `tether`: run a VSOA server with demo services, or talk to any VSOA server.
//!
//! Thin by design: parse arguments, call the library, print. The output formats of `call`
//! and `sub` are a contract other tools and tests rely on (see README).

mod cmd;
mod dashboard;
mod demo;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "VSOA-compatible messaging: serve, call, subscribe"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server with the demo services (/echo, /publish, datagram echo).
    // A later flag overrides an earlier one: the settings of --config come first.
    #[command(args_override_self = true)]
    Serve(Box<cmd::serve::Args>),
    /// Make one RPC call and print the reply as one JSON line.
    Call(cmd::call::RpcArgs),
    /// Subscribe and print each message as one JSON line.
    Sub(cmd::sub::Args),
    /// Call a route that opens a stream; copy stdin to it and it to stdout.
    Stream(cmd::stream::Args),
    /// Upload a file to a server's file service (SHA-256 checked, resumable).
    Put(cmd::files::PutArgs),
    /// Download a file from a server's file service (SHA-256 checked, resumable).
    Get(cmd::files::GetArgs),
    /// Listen for a clever-show server's announcement and print it as JSON.
    Discover(cmd::discover::Args),
    /// Send one datagram (TCP or --quick), optionally wait for one back.
    Dgram(cmd::dgram::Args),
    /// Run a position (name lookup) service.
    Position(cmd::position::ServeArgs),
    /// Resolve a server name through position servers and print the answer as JSON.
    Lookup(cmd::position::LookupArgs),
    /// Send one socket_protocol request and print the response as one JSON line.
    Sp(cmd::sp::Args),
    /// Measure a scenario on loopback and print one JSON object.
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    use clap::CommandFactory;
    let argv = match cmd::config::expand(std::env::args_os().collect(), &Cli::command()) {
        Ok(argv) => argv,
        Err(failure) => {
            eprintln!("tether: {}", failure.message);
            return ExitCode::from(failure.code);
        }
    };
    let cli = Cli::parse_from(argv);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                let default = match cli.command {
                    // async-nats logs every slow-consumer event; the federation counts them
                    // and logs them at most once a second.
                    Command::Serve(_) | Command::Position(_) => "info,async_nats=warn",
                    _ => "warn",
                };
                tracing_subscriber::EnvFilter::new(default)
            }),
        )
        .init();
    let mut builder = match &cli.command {
        Command::Bench(args) if args.threads == 1 => tokio::runtime::Builder::new_current_thread(),
        Command::Bench(args) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(args.threads.max(1));
            b
        }
        Command::Serve(args) if args.threads == Some(1) => {
            tokio::runtime::Builder::new_current_thread()
        }
        Command::Serve(args) if args.threads.is_some() => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(args.threads.map_or(1, usize::from));
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(*args).await,
            Command::Call(args) => cmd::call::run(args).await,
            Command::Sub(args) => cmd::sub::run(args).await,
            Command::Dgram(args) => cmd::dgram::run(args).await,
            Command::Stream(args) => cmd::stream::run(args).await,
            Command::Put(args) => cmd::files::put(args).await,
            Command::Get(args) => cmd::files::get(args).await,
            Command::Discover(args) => cmd::discover::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Sp(args) => cmd::sp::run(args).await,
            Command::Position(args) => cmd::position::serve(args).await,
            Command::Lookup(args) => cmd::position::lookup(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("tether: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Clap checks a subcommand's definition only when it runs; check them all here.
    #[test]
    fn every_subcommand_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
