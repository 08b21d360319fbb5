//! Runs the fake Kubernetes API server by hand:
//! `fake-kube --kubeconfig FILE [--postgres URL]` writes a kubeconfig for
//! it, seeds the namespace `poolside` with the app `core-api` (its pod made
//! by its Deployment), and serves until killed. Pods created through it run
//! as local processes, as in tests.

use dbsnap_test_support::fake_kube::{FakeKube, APP, APP_SECRET};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: fake-kube --kubeconfig FILE [--postgres URL]";
const NAMESPACE: &str = "poolside";
const DEFAULT_POSTGRES: &str = "postgresql://app:app-password@127.0.0.1:5432/app";

/// The command line.
struct Args {
    kubeconfig: PathBuf,
    postgres: String,
}

fn parse_args() -> Result<Args, String> {
    let mut kubeconfig = None;
    let mut postgres = DEFAULT_POSTGRES.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kubeconfig" => kubeconfig = args.next().map(PathBuf::from),
            "--postgres" => postgres = args.next().ok_or("--postgres needs a URL")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let kubeconfig = kubeconfig.ok_or(USAGE)?;
    Ok(Args {
        kubeconfig,
        postgres,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let kube = FakeKube::start();
    if let Err(e) = kube.write_kubeconfig(&args.kubeconfig) {
        eprintln!("fake-kube: cannot write {}: {e}", args.kubeconfig.display());
        return ExitCode::FAILURE;
    }
    kube.seed_app(NAMESPACE, &args.postgres);
    println!("fake-kube: serving {}", kube.url());
    println!(
        "fake-kube: wrote kubeconfig {} (context fake)",
        args.kubeconfig.display()
    );
    println!(
        "fake-kube: seeded namespace {NAMESPACE}: deployment {APP} (one pod), secret {APP_SECRET}"
    );
    println!(
        "fake-kube: try kubectl --kubeconfig {} get deploy -n {NAMESPACE}; Ctrl-C stops",
        args.kubeconfig.display()
    );
    loop {
        std::thread::park();
    }
}
