//! The `medsam-viewer` command line: no subcommand opens the viewer; subcommands do the same
//! work headless (`info`, `convert`, ...). Errors print one line and exit with status 2.

use clap::Parser;

fn main() {
    set_thread_environment();
    let cli = medsam_viewer::cli::Cli::parse();
    match medsam_viewer::cli::run(cli) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Thread settings candle reads from the environment, set before any thread starts:
///
/// * candle asks for its thread count on every matrix product and, unless
///   `RAYON_NUM_THREADS` is set, counts the physical cores by reading /proc/cpuinfo each time
///   (about 1% of a propagation). The variable is set to what candle would find, which rayon's
///   pool then takes too.
/// * candle runs large element-wise operations on a pool of its own whose threads spin for a
///   while after each one, taking a core from the rayon pool that runs the network's products
///   (about 5% of a propagation). `CANDLE_NUM_THREADS=1` keeps those operations on the calling
///   thread; the propagation overlaps its passes and slices, so the other core has work.
fn set_thread_environment() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        // SAFETY: no other thread exists yet that could read the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: as above.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
