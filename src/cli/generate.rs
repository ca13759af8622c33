//! `keepalive completions SHELL` and `keepalive man`: shell completions and the manual pages,
//! generated from the command-line definition itself (clap_complete, clap_mangen) so they
//! never drift from it. Packagers run them at build time; users can run them at install time.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use super::{Cli, EXIT_FAILURE};

/// Prints the completion script of `shell`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "keepalive", &mut out);
    write_out(&out)
}

/// Prints the main manual page, or writes it and one page per subcommand (`keepalive-serve.1`,
/// as git does) into `dir`.
pub fn man(dir: Option<&Path>) -> ExitCode {
    let command = Cli::command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        if let Err(err) = clap_mangen::Man::new(command).render(&mut out) {
            eprintln!("keepalive: cannot render the manual page: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
        return write_out(&out);
    };
    let written =
        std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "keepalive: cannot write the manual pages to {}: {err}",
                dir.display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn write_out(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`keepalive man | head`) is not worth a message.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keepalive: cannot write to standard output: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
