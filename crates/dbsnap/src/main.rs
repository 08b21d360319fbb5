//! The `dbsnap` command: parses arguments, merges them with `dbsnap.toml`,
//! calls dbsnap-core, prints results (text or `--json`), maps errors to the
//! documented exit codes. No logic beyond that lives here.

mod bucket_cmd;
mod cli;
mod copy_cmd;
mod create_cmd;
mod drill_cmd;
mod encryption;
mod hints;
mod k8s_capture;
mod k8s_cmd;
mod k8s_jump;
mod location;
mod logging;
mod output;
mod progress;
mod prune_cmd;
mod restore_cmd;

use std::process::ExitCode;

use clap::Parser;

/// Exit code when standard output was closed early (`dbsnap list | head`):
/// what a program killed by SIGPIPE reports in a shell.
const CLOSED_PIPE: i32 = dbsnap_core::error::exit::CLOSED_OUTPUT as i32;

/// A reader that stops reading (`dbsnap list | head`) is not a crash: Rust
/// ignores SIGPIPE, so a closed standard output makes printing panic; end
/// quietly instead, as `cat` would.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(CLOSED_PIPE);
        }
        // Standard output that cannot be written (a full disk, /dev/full):
        // a storage failure in words, not a crash. Whatever the command
        // did is done; its log says so.
        if message.starts_with("failed printing to stdout")
            || message.starts_with("failed to write completion file")
        {
            let why = match message.split_once(": ") {
                Some((_, why)) => why,
                None => message,
            };
            eprintln!(
                "error: cannot write standard output: {why}\nhint: the command's work is done (see its log); free the disk standard output goes to, or send it elsewhere"
            );
            std::process::exit(i32::from(dbsnap_core::error::exit::STORAGE));
        }
        default(info)
    }));
}

/// `dbsnap __relay ...`: the relay a jump pod runs for each connection
/// (see `dbsnap_pg::relay`); the protocol is on stdin and stdout, so
/// nothing else may be printed there.
fn relay() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    if args == ["--probe"] {
        println!("dbsnap relay {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let settings = dbsnap_core::relay::RelayArgs::parse(&args).and_then(|a| Ok((a.settings()?, a)));
    let (server, args) = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dbsnap relay: {e}");
            return ExitCode::from(dbsnap_core::error::exit::USAGE);
        }
    };
    if args.describe {
        println!("{}", server.to_libpq_string_without_password());
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(dbsnap_core::relay::run_on_stdio(&server)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbsnap relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command line clap refuses: its message on stderr as usual, and with
/// `--json` anywhere in the arguments also the JSON error document every
/// other failure gives (exit 2). Help and version output are not errors.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let rendered = e.render().to_string();
    if e.kind() == ErrorKind::MissingSubcommand {
        // clap's own words list the hidden commands too.
        eprintln!("error: no command given\nhint: `dbsnap --help` lists the commands");
    } else {
        let _ = e.print();
    }
    let (message, hint) = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            return ExitCode::from(e.exit_code() as u8)
        }
        // `dbsnap` alone (or with only global flags): the help, on
        // standard error; a script asked for JSON gets it too.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => (
            "no command given".to_string(),
            "`dbsnap --help` lists the commands".to_string(),
        ),
        _ => usage_words(&rendered),
    };
    if json {
        let mut doc = output::ErrorDoc::new("usage", dbsnap_core::error::exit::USAGE, message);
        doc.hint = Some(hint);
        output::Envelope::failed(doc).print();
    }
    ExitCode::from(dbsnap_core::error::exit::USAGE)
}

/// A clap error's words as an error and a hint: what is wrong (with
/// clap's tip, if any), then the command's usage and where its flags are.
fn usage_words(rendered: &str) -> (String, String) {
    let text = rendered.trim().trim_start_matches("error: ");
    let (what, rest) = text.split_once("\n\nUsage: ").unwrap_or((text, ""));
    let message = what
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join("; ");
    let usage = rest.lines().next().unwrap_or("").trim();
    // The command the flags were given to, as the user wrote it.
    let command = {
        use clap::CommandFactory;
        let cli = cli::Cli::command();
        std::env::args().skip(1).find(|a| {
            cli.get_subcommands()
                .any(|c| c.get_name() == a && c.get_name() != "help")
        })
    };
    let hint = match (command, usage.is_empty()) {
        (Some(c), true) => format!("`dbsnap {c} --help` lists its flags"),
        (Some(c), false) => format!("usage: {usage}; `dbsnap {c} --help` lists its flags"),
        (None, true) => "`dbsnap --help` lists the commands".to_string(),
        (None, false) => format!("usage: {usage}; `dbsnap --help` lists the commands"),
    };
    (message, hint)
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    if std::env::args_os().nth(1).as_deref() == Some(dbsnap_core::WATCHDOG_ARG.as_ref()) {
        dbsnap_core::run_watchdog();
    }
    if std::env::args_os().nth(1).as_deref() == Some(dbsnap_core::relay::RELAY_ARG.as_ref()) {
        return relay();
    }
    // Child programs die with dbsnap, however it ends (see dbsnap_pg::process).
    if let Ok(exe) = std::env::current_exe() {
        dbsnap_core::guard_children_with(exe);
    }
    // Snapshots, spools, journals and logs hold the application's data.
    dbsnap_core::make_new_files_private();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.json();
    output::command_dry_run(cli.dry_run());
    let log = logging::init(&cli);
    logging::prune(&cli, log.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(dbsnap_core::error::exit::INTERNAL);
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // Blocking copy threads end once their pg_dump is gone; do not wait forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    let code = match result {
        Ok(code) => {
            if let (Some(l), false) = (&log, json) {
                eprintln!("log: {}", l.path.display());
            }
            code
        }
        Err(e) => {
            tracing::info!("failed (exit code {}): {e}", e.exit_code());
            output::print_error(&e, json, log.as_ref().map(|l| l.path.as_path()));
            e.exit_code()
        }
    };
    ExitCode::from(code)
}
