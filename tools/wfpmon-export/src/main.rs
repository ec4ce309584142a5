//! `wfpmon-export`: see README.md and `wfpmon-export --help`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wfpmon_export::config::{self, EXIT_CODES, ExitCode as Code};

fn exit_codes() -> String {
    let mut s = String::from("Exit codes:\n  0  success\n");
    for (code, meaning) in EXIT_CODES {
        let _ = writeln!(s, "  {}  {meaning}", code as u8);
    }
    s
}

/// Streams the wfpmon driver's process-attributed flows to IPFIX
/// collectors and Prometheus.
#[derive(Debug, Parser)]
#[command(version, after_help = exit_codes())]
struct Cli {
    /// The configuration file (TOML; see README.md). Default:
    /// %ProgramData%\wfpmon\wfpmon-export.toml on Windows,
    /// ./wfpmon-export.toml elsewhere.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Run in this console instead of as a service (Ctrl+C stops).
    #[arg(long)]
    foreground: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration file and print what it means.
    CheckConfig,
    /// Install the Windows service (automatic start) for this configuration.
    InstallService,
    /// Stop and remove the Windows service.
    UninstallService,
    /// Run as the service (the service control manager starts this).
    #[command(hide = true)]
    Service,
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(default_config_path)
}

#[cfg(windows)]
fn default_config_path() -> PathBuf {
    wfpmon_export::windows::default_config_path()
}

#[cfg(not(windows))]
fn default_config_path() -> PathBuf {
    PathBuf::from("wfpmon-export.toml")
}

fn run(cli: &Cli) -> Result<(), config::Error> {
    let path = config_path(cli);
    match (&cli.command, cli.foreground) {
        (Some(Command::CheckConfig), _) => {
            let c = config::load(&path)?;
            println!("{}: valid", path.display());
            println!("{c:#?}");
            // The collector: a TCP one must accept a connection (exit code
            // 8 otherwise); UDP cannot be probed honestly (README).
            if let Some(collector) = &c.collector {
                match config::probe_collector(collector, config::PROBE_TIMEOUT)? {
                    config::Probe::Accepted => println!(
                        "collector {} ({}, tcp): accepts connections",
                        collector.name, collector.address
                    ),
                    config::Probe::NotProbed(why) => {
                        println!(
                            "collector {} ({}): {why}",
                            collector.name, collector.address
                        );
                    }
                }
            }
            Ok(())
        }
        (None, false) => Err(config::Error::new(
            Code::Usage,
            "nothing to do: give --foreground, check-config, install-service or uninstall-service (see --help)",
        )),
        (command, foreground) => platform(command.as_ref(), foreground, &path),
    }
}

#[cfg(windows)]
fn platform(
    command: Option<&Command>,
    _foreground: bool,
    path: &std::path::Path,
) -> Result<(), config::Error> {
    use wfpmon_export::windows as w;
    w::register_provider();
    match command {
        Some(Command::InstallService) => {
            // The file must be valid before a service is made to read it.
            config::load(path)?;
            let absolute = std::path::absolute(path).map_err(|e| {
                config::Error::new(Code::ConfigUnreadable, format!("{}: {e}", path.display()))
            })?;
            w::install(&absolute)?;
            println!(
                "service {} installed (automatic start), configuration {}",
                w::SERVICE_NAME,
                absolute.display()
            );
            Ok(())
        }
        Some(Command::UninstallService) => {
            let name = w::SERVICE_NAME;
            match w::uninstall()? {
                w::Removal::Removed => println!("service {name} removed"),
                w::Removal::NotInstalled => {
                    println!("service {name} is not installed: nothing to remove");
                }
                w::Removal::AlreadyMarked => println!(
                    "service {name} was already marked for deletion: it goes when the last handle to it closes"
                ),
            }
            Ok(())
        }
        Some(Command::Service) => w::run_service(path),
        _ => w::run_foreground(&config::load(path)?),
    }
}

#[cfg(not(windows))]
fn platform(_: Option<&Command>, _: bool, _: &std::path::Path) -> Result<(), config::Error> {
    Err(config::Error::new(
        Code::Failure,
        "this runs only on Windows (it reads the wfpmon driver); check-config works anywhere",
    ))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wfpmon-export: error: {e}");
            ExitCode::from(e.code as u8)
        }
    }
}
