//! The `medsam-viewer` command line: no subcommand opens the viewer; subcommands do the same
//! work headless (`info`, `convert`, ...). Errors print one line and exit with status 2.

use clap::Parser;

fn main() {
    pin_thread_count();
    let cli = medsam_viewer::cli::Cli::parse();
    match medsam_viewer::cli::run(cli) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// candle asks for its thread count on every matrix product and, unless `RAYON_NUM_THREADS`
/// is set, counts the physical cores by reading /proc/cpuinfo each time (about 1% of a
/// propagation). Setting the variable once, before any thread starts, to what candle would
/// find keeps its choice and skips the reads; rayon's pool then takes the same count.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        // SAFETY: no other thread exists yet that could read the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
}
