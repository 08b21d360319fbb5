//! Encryption settings: `create --encrypt-to/--passphrase`, `--identity`,
//! `[encryption]` in dbsnap.toml and `DBSNAP_PASSPHRASE`, handed to
//! dbsnap-core's `crypt` once per run.

use std::path::PathBuf;

use age::secrecy::SecretString;
use clap::Args;
use dbsnap_core::config::Config;
use dbsnap_core::crypt::{self, Crypto, Keys, Seal};
use dbsnap_core::CoreError;

/// The environment variable holding the passphrase.
pub const PASSPHRASE_ENV: &str = "DBSNAP_PASSPHRASE";

#[derive(Debug, Clone, Default, Args)]
pub struct EncryptArgs {
    /// Encrypt the snapshot to this age recipient (age1…), or to every recipient in this file; repeatable (default: `recipients` in [encryption]).
    #[arg(long, value_name = "RECIPIENT|FILE")]
    pub encrypt_to: Vec<String>,
    /// Encrypt the snapshot with the passphrase in DBSNAP_PASSPHRASE.
    #[arg(long, conflicts_with = "encrypt_to")]
    pub passphrase: bool,
}

/// The run's encryption: what new snapshots are encrypted to (`create`'s flags, else the
/// config's `[encryption]`; restore's safety snapshots follow the config)
/// and the keys reads may use (`--identity`, `identity` in the config,
/// `DBSNAP_PASSPHRASE`).
pub fn configure(
    create: Option<&EncryptArgs>,
    writes_snapshots: bool,
    identity: &[PathBuf],
    config: &Config,
) -> Result<Crypto, CoreError> {
    let config = config.encryption.clone().unwrap_or_default();
    let passphrase = std::env::var(PASSPHRASE_ENV)
        .ok()
        .map(|p| SecretString::from(p.trim_end_matches(['\r', '\n']).to_string()));
    let flags = create.cloned().unwrap_or_default();
    let flags_given = flags.passphrase || !flags.encrypt_to.is_empty();
    let (recipients, use_passphrase, from) = if flags_given {
        (flags.encrypt_to, flags.passphrase, "--passphrase")
    } else {
        (
            config.recipients.clone(),
            config.passphrase.unwrap_or(false),
            "passphrase = true in [encryption]",
        )
    };
    if use_passphrase && !recipients.is_empty() {
        return Err(CoreError::Config {
            message: "[encryption] has both recipients and passphrase = true".into(),
            hint: "age encrypts to recipients or to a passphrase, not both: keep one".into(),
        });
    }
    let seal = if !writes_snapshots {
        None
    } else if use_passphrase {
        let p = passphrase.clone().filter(|p| {
            use age::secrecy::ExposeSecret;
            !p.expose_secret().is_empty()
        });
        match p {
            Some(p) => Some(Seal::Passphrase(p)),
            None => {
                return Err(CoreError::Config {
                    message: format!("{from} needs the passphrase in {PASSPHRASE_ENV}"),
                    hint: format!(
                        "export {PASSPHRASE_ENV}=… (read from a secret store; it is never written anywhere)"
                    ),
                })
            }
        }
    } else if recipients.is_empty() {
        None
    } else {
        let from = if flags_given {
            "--encrypt-to"
        } else {
            "recipients in [encryption]"
        };
        Some(Seal::Recipients(crypt::parse_recipients(
            &recipients,
            from,
        )?))
    };
    // --identity replaces the config's identity, as every flag replaces
    // its setting: a wrong key given on purpose is not rescued by another.
    let identity_files = if identity.is_empty() {
        config.identity.clone()
    } else {
        identity.to_vec()
    };
    // A key file that cannot be read is an error now, not when (or if) an
    // encrypted snapshot is opened.
    for f in &identity_files {
        if let Err(e) = std::fs::File::open(f) {
            return Err(CoreError::Config {
                message: format!("cannot read the age identity file {}: {e}", f.display()),
                hint: "--identity (and identity in [encryption]) take files made by `age-keygen`"
                    .into(),
            });
        }
    }
    Ok(Crypto::new(
        seal,
        Keys {
            identity_files,
            passphrase,
        },
    ))
}
