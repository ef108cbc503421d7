//! A progress bar on stderr while the cache fills, when stderr is a
//! terminal and the fill takes long enough to notice; nothing otherwise.
//!
//! Each fill gets a bar only once it has run for [`NOTICE`]: small payloads
//! fill in milliseconds and never flash one. Bars of payloads filled in
//! parallel (`stigmer server`) stack, and each is cleared when its fill ends.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stigmer::launch::{FillProgress, FillTicker};

/// How long a fill runs before it gets a bar.
const NOTICE: Duration = Duration::from_millis(300);

/// [`NOTICE`], or nothing in a debug build run with
/// `STIGMER_TEST_PROGRESS_AT_ONCE` set: how fast a fill is depends on the
/// machine and the build, and a test of the bar must not.
fn notice() -> Duration {
    let at_once = cfg!(debug_assertions)
        && std::env::var_os(stigmer::env::STIGMER_TEST_PROGRESS_AT_ONCE)
            .is_some_and(|v| !v.is_empty());
    if at_once { Duration::ZERO } else { NOTICE }
}

/// The bars of the fills in progress.
#[derive(Debug)]
pub(crate) struct Bars {
    multi: MultiProgress,
}

impl Bars {
    /// Bars on stderr; indicatif draws nothing when it is not a terminal.
    pub(crate) fn stderr() -> Bars {
        Bars { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()) }
    }
}

impl FillProgress for Bars {
    fn start(&self, name: &str, len: u64) -> Box<dyn FillTicker> {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
            .with_message(format!("filling the cache: {name}"));
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Box::new(Ticker {
            multi: self.multi.clone(),
            bar,
            started: Instant::now(),
            notice: notice(),
            shown: false,
        })
    }
}

struct Ticker {
    multi: MultiProgress,
    bar: ProgressBar,
    started: Instant,
    notice: Duration,
    shown: bool,
}

impl FillTicker for Ticker {
    fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
        if !self.shown && self.started.elapsed() >= self.notice {
            self.shown = true;
            self.bar = self.multi.add(self.bar.clone());
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if self.shown {
            self.multi.remove(&self.bar);
        }
    }
}
