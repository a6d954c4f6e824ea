//! The `medsam-viewer` command line: no subcommand opens the viewer; subcommands do the same
//! work headless (`info`, `convert`, ...). Errors print one line and exit with status 2.

use clap::Parser;

fn main() {
    let cli = medsam_viewer::cli::Cli::parse();
    match medsam_viewer::cli::run(cli) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
