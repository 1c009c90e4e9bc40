//! The `haivemind` binary: flags, config, start-up and output. No business logic: every
//! command is a call into `haivemind-store` or `haivemind-mcp`.

mod bench;
mod bench_hybrid;
mod bench_tools;
mod cli;
mod commands;
mod connectors;
mod coordination;
mod devops;
mod doctor;
mod hook;
mod import_files;
mod install;
mod locomo;
mod migrate;
mod node;
mod output;
mod probe;
mod remote;
mod serve;
mod stdio_client;
mod tokens;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One message, with its chain of causes, and an exit code that tells a script
            // whether retrying with other input could help.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let caller_mistake = error
                .downcast_ref::<haivemind_store::StoreError>()
                .is_some_and(|e| e.is_caller_error())
                || error
                    .downcast_ref::<haivemind_core::InvalidInput>()
                    .is_some()
                || error
                    .downcast_ref::<haivemind_core::ConfigError>()
                    .is_some();
            ExitCode::from(if caller_mistake { 2 } else { 1 })
        }
    }
}
