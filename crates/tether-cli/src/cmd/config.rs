//! `tether serve --config FILE`: every flag of `serve` can also come from a TOML file, as
//! `nats-server -c` or `mosquitto -c` take theirs.
//!
//! The file is flat: each key is the long name of a flag, each value what the flag takes
//! (a string, a number, or `true` for a switch):
//!
//! ```toml
//! listen = "127.0.0.1:3005"
//! name = "ground-1"
//! max-connections = 500
//! send-timeout = 0.25
//! require-secret = true
//! ```
//!
//! The file's settings become flags placed *before* the command line's, and `serve`
//! lets a later flag override an earlier one, so clap checks file values exactly as it
//! checks flags and the precedence is: command line, then environment variable, then the
//! file, then the library's default (a file key whose flag has an environment variable that
//! is set is skipped). An unknown key, a switch set to anything but a boolean, or a table
//! is a usage error naming the key.

use std::ffi::OsString;
use std::path::Path;

use clap::{ArgAction, Command};
use serde_json::Value;

use super::{exit, Failure};

/// `argv` with the settings of `serve`'s `--config FILE`, if any, expanded into flags; any
/// other command line is returned as it is.
pub(crate) fn expand(argv: Vec<OsString>, cli: &Command) -> Result<Vec<OsString>, Failure> {
    let Some(serve_at) = argv.iter().position(|a| a == "serve") else {
        return Ok(argv);
    };
    // Only `tether serve ...`: the subcommand must be the first argument after the binary.
    if serve_at != 1 {
        return Ok(argv);
    }
    let Some(path) = config_path(&argv[serve_at + 1..])? else {
        return Ok(argv);
    };
    let Some(serve) = cli.find_subcommand("serve") else {
        return Ok(argv);
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| usage(&path, format!("cannot read it: {e}")))?;
    let flags = flags_from(&text, serve, &|var| std::env::var_os(var).is_some())
        .map_err(|why| usage(&path, why))?;
    let mut out = argv[..=serve_at].to_vec();
    out.extend(flags.into_iter().map(OsString::from));
    out.extend_from_slice(&argv[serve_at + 1..]);
    Ok(out)
}

fn usage(path: &Path, why: String) -> Failure {
    Failure {
        message: format!("configuration {}: {why}", path.display()),
        code: exit::USAGE,
    }
}

/// The value of `--config FILE` or `--config=FILE` among `args`.
fn config_path(args: &[OsString]) -> Result<Option<std::path::PathBuf>, Failure> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == "--config" {
            return match it.next() {
                Some(file) => Ok(Some(file.into())),
                None => Err(Failure::usage("--config needs a FILE")),
            };
        }
        if let Some(file) = text.strip_prefix("--config=") {
            return Ok(Some(file.into()));
        }
    }
    Ok(None)
}

/// The flags a configuration text stands for. `env_is_set` says whether an environment
/// variable is set (a flag's variable beats the file).
fn flags_from(
    text: &str,
    serve: &Command,
    env_is_set: &dyn Fn(&std::ffi::OsStr) -> bool,
) -> Result<Vec<String>, String> {
    let table: std::collections::BTreeMap<String, Value> =
        basic_toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !a.is_hide_set())
            .filter(|_| key != "config")
            .ok_or_else(|| unknown(&key, serve))?;
        if arg.get_env().is_some_and(env_is_set) {
            continue;
        }
        match (arg.get_action(), &value) {
            (ArgAction::SetTrue, Value::Bool(true)) => flags.push(format!("--{key}")),
            (ArgAction::SetTrue, Value::Bool(false)) => {}
            (ArgAction::SetTrue, _) => return Err(format!("{key} is a switch: true or false")),
            (_, Value::String(s)) => flags.push(format!("--{key}={s}")),
            (_, Value::Number(n)) => flags.push(format!("--{key}={n}")),
            (ArgAction::Append, Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => flags.push(format!("--{key}={s}")),
                        Value::Number(n) => flags.push(format!("--{key}={n}")),
                        _ => return Err(format!("{key}: each item is a string or a number")),
                    }
                }
            }
            _ => return Err(format!("{key} takes one string or number")),
        }
    }
    Ok(flags)
}

fn unknown(key: &str, serve: &Command) -> String {
    let kebab = key.replace('_', "-");
    let known = serve
        .get_arguments()
        .any(|a| a.get_long() == Some(kebab.as_str()));
    if key == "config" {
        "config cannot name another file".to_string()
    } else if known && kebab != key {
        format!("unknown key {key:?}; did you mean {kebab:?}? (keys are the long flags of `tether serve`)")
    } else {
        format!("unknown key {key:?} (keys are the long flags of `tether serve`, see `tether serve --help`)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn serve() -> Command {
        crate::Cli::command()
            .find_subcommand("serve")
            .expect("serve")
            .clone()
    }

    fn flags(text: &str) -> Result<Vec<String>, String> {
        flags_from(text, &serve(), &|_| false)
    }

    #[test]
    fn keys_become_flags_and_switches_appear_only_when_true() {
        let got = flags(
            "listen = \"127.0.0.1:0\"\nmax-connections = 5\nsend-timeout = 0.25\nrequire-secret = true\nno-gateway = false\n",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--listen=127.0.0.1:0",
                "--max-connections=5",
                "--require-secret",
                "--send-timeout=0.25"
            ]
        );
    }

    #[test]
    fn bad_files_name_the_key() {
        let e = flags("max_connections = 5").unwrap_err();
        assert!(
            e.contains("\"max_connections\"") && e.contains("\"max-connections\""),
            "{e}"
        );
        let e = flags("colour = \"red\"").unwrap_err();
        assert!(e.contains("unknown key \"colour\""), "{e}");
        let e = flags("no-gateway = \"yes\"").unwrap_err();
        assert!(e.contains("no-gateway is a switch"), "{e}");
        let e = flags("[limits]\nmax-connections = 5").unwrap_err();
        assert!(
            e.contains("limits takes one string or number") || e.contains("unknown key \"limits\""),
            "{e}"
        );
        let e = flags("config = \"other.toml\"").unwrap_err();
        assert!(e.contains("config cannot name another file"), "{e}");
        let e = flags("listen = ").unwrap_err();
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn an_environment_variable_beats_the_file() {
        let got = flags_from("password = \"from-file\"\nname = \"n\"", &serve(), &|var| {
            var == "TETHER_PASSWORD"
        })
        .unwrap();
        assert_eq!(got, ["--name=n"]);
    }

    #[test]
    fn the_file_goes_before_the_command_line() {
        let dir = tether_testkit::temp_dir("config-expand");
        let file = dir.join("serve.toml");
        std::fs::write(&file, "name = \"from-file\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let argv: Vec<OsString> = [
            "tether",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--name",
            "flag",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let got = expand(argv, &crate::Cli::command()).unwrap_or_else(|f| panic!("{}", f.message));
        let got: Vec<String> = got.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            got,
            [
                "tether",
                "serve",
                "--listen=127.0.0.1:0",
                "--name=from-file",
                "--config",
                file.to_str().unwrap(),
                "--name",
                "flag"
            ]
        );
        // Other commands are left alone, and a missing file is a usage error.
        let call: Vec<OsString> = ["tether", "call", "--config", "x"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            expand(call.clone(), &crate::Cli::command()).ok(),
            Some(call)
        );
        let missing: Vec<OsString> = ["tether", "serve", "--config", "/nonexistent/t.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        let f = expand(missing, &crate::Cli::command()).expect_err("an error");
        assert_eq!(f.code, exit::USAGE);
        assert!(f.message.contains("cannot read it"), "{}", f.message);
    }
}
