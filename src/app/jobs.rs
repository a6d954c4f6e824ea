//! `BackgroundJob`: work that must not block the UI thread (loading, inference, meshing) runs on
//! a worker thread, reports progress (done / total), can be cancelled, and streams messages back
//! through a channel that the UI drains each frame; every message wakes the UI. The parallel
//! work jobs hand to rayon runs at a lower scheduling priority than the UI thread.

use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Nice value of rayon's threads in the viewer: they still take every idle core, but yield to
/// the UI thread when it has a frame to draw.
#[cfg(target_os = "linux")]
const COMPUTE_NICE: libc::c_int = 10;

/// Builds rayon's global pool (the network's products, the readers' decoding) with threads at
/// a lower priority than the UI thread, so that a propagation keeping every core busy does not
/// delay frames. Call before any parallel work; if the pool already exists it is left as it is.
pub fn start_compute_pool() {
    let _ = rayon::ThreadPoolBuilder::new().start_handler(|_| lower_thread_priority()).build_global();
}

fn lower_thread_priority() {
    // Linux keeps a nice value per thread; elsewhere this would change the whole process.
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with `who` 0 only changes the calling thread's nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, COMPUTE_NICE);
    }
}

/// Shared progress of a job: how much is done, and whether the user asked to stop.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicUsize,
    total: AtomicUsize,
    cancel: AtomicBool,
}

impl Progress {
    pub fn set(&self, done: usize, total: usize) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
    }

    pub fn advance(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// (done, total); total 0 means "unknown".
    pub fn get(&self) -> (usize, usize) {
        (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The cancel flag itself, for code that takes an `&AtomicBool`.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// The worker's side: sends messages to the UI and wakes it.
pub struct JobSender<M> {
    tx: Sender<M>,
    wake: Option<egui::Context>,
}

impl<M> JobSender<M> {
    /// Sends a message; returns false when the UI has dropped the job.
    pub fn send(&self, message: M) -> bool {
        let ok = self.tx.send(message).is_ok();
        if let Some(ctx) = &self.wake {
            ctx.request_repaint();
        }
        ok
    }
}

/// A job running on its own thread.
pub struct BackgroundJob<M> {
    pub title: String,
    wake: Option<egui::Context>,
    pub progress: Arc<Progress>,
    rx: Receiver<M>,
    started: Instant,
    finished: Arc<AtomicBool>,
}

impl<M: Send + 'static> BackgroundJob<M> {
    /// Starts `work` on a new thread; `wake` is repainted whenever a message arrives.
    pub fn spawn(title: impl Into<String>, wake: Option<egui::Context>, work: impl FnOnce(&Arc<Progress>, &JobSender<M>) + Send + 'static) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let progress = Arc::new(Progress::default());
        let finished = Arc::new(AtomicBool::new(false));
        let (p, f) = (progress.clone(), finished.clone());
        let sender = JobSender { tx, wake: wake.clone() };
        std::thread::Builder::new()
            .name("medsam-job".into())
            .spawn(move || {
                work(&p, &sender);
                f.store(true, Ordering::Release);
                if let Some(ctx) = &sender.wake {
                    ctx.request_repaint();
                }
            })
            .expect("spawning a worker thread");
        BackgroundJob { title: title.into(), wake, progress, rx, started: Instant::now(), finished }
    }

    /// Every message that arrived since the last call.
    pub fn drain(&self) -> Vec<M> {
        self.rx.try_iter().collect()
    }

    /// The next message that arrived, if any.
    pub fn next(&self) -> Option<M> {
        self.rx.try_recv().ok()
    }

    /// Asks for another frame soon (messages are still waiting).
    pub fn wake(&self) {
        if let Some(ctx) = &self.wake {
            ctx.request_repaint();
        }
    }

    /// True once the worker has returned (its messages may still be waiting in `drain`).
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_progress_and_cancel() {
        let job = BackgroundJob::spawn("count", None, |p, tx| {
            for n in 0..1000 {
                if p.is_cancelled() {
                    tx.send(-1i64);
                    return;
                }
                p.set(n + 1, 1000);
                tx.send(n as i64);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        job.progress.cancel();
        while !job.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = job.drain();
        assert_eq!(*got.last().unwrap(), -1, "the worker saw the cancel flag");
        assert!(got.len() < 1000);
        let (done, total) = job.progress.get();
        assert!(done > 0 && total == 1000);
    }
}
