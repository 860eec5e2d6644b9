//! `runledger backup --to DIR`: asks the running server for an online backup (the server writes
//! it: sled locks its data directory) and shows its progress.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::progress::Progress;
use super::{CliError, ClientArgs, Format, Printer, bearer, block_on, connect};
use crate::admin_api::BackupRequest;
use crate::admin_api::admin_client::AdminClient;

/// `runledger backup ...`
#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Directory to write the backup to, on the server's machine: new, or empty, and outside
    /// the data directory. A relative path is taken from this command's working directory.
    #[arg(long)]
    pub to: PathBuf,
}

/// Runs `runledger backup`; exit codes as for the other client commands.
pub fn backup(args: BackupArgs) -> ExitCode {
    block_on(async move {
        let to = std::path::absolute(&args.to)
            .map_err(|e| CliError::usage(format!("--to {}: {e}", args.to.display())))?;
        let to = to
            .to_str()
            .ok_or_else(|| CliError::usage("--to must be valid UTF-8"))?
            .to_owned();
        let auth = bearer(&args.client)?;
        let channel = connect(&args.client).await?;
        let mut client = AdminClient::with_interceptor(channel, auth);
        let mut stream = client.backup(BackupRequest { to }).await?.into_inner();
        let mut progress = Progress::stderr("backup");
        let last = loop {
            match stream.message().await? {
                Some(message) if message.done => break message,
                Some(message) => progress.status(&format!(
                    "{} keys, {} MiB",
                    message.keys,
                    message.bytes / (1024 * 1024)
                )),
                None => {
                    progress.finish();
                    return Err(CliError::usage(
                        "the server ended the backup without finishing it",
                    ));
                }
            }
        };
        progress.finish();
        Printer::new(args.client.output).backup(&last)
    })
}

impl Printer {
    /// A finished backup: one line in table form, the message otherwise.
    pub fn backup(&self, last: &crate::admin_api::BackupProgress) -> Result<(), CliError> {
        if self.format() != Format::Table {
            return self.document(last);
        }
        println!(
            "backed up {} runs and {} experiments ({} keys, {:.1} MiB; {} changed while \
             copying, taken as they were at the start) to {}; the copy passed `runledger check`",
            last.runs,
            last.experiments,
            last.keys,
            last.bytes as f64 / (1024.0 * 1024.0),
            last.changed_during,
            last.to
        );
        Ok(())
    }
}
