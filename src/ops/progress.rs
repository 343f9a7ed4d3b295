//! Progress for long operator commands: an indicatif bar with rate and ETA on a terminal, plain lines every few
//! seconds otherwise (logs, CI), nothing at all in tests.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

enum Output {
    Bar(ProgressBar),
    Lines { last: Instant },
    Silent,
}

pub struct Progress {
    output: Output,
    label: String,
    total: u64,
    done: u64,
    started: Instant,
}

impl Progress {
    /// A bar on a terminal, plain lines on anything else.
    pub fn for_stderr() -> Self {
        let output = if std::io::stderr().is_terminal() {
            Output::Bar(ProgressBar::hidden())
        } else {
            Output::Lines {
                last: Instant::now(),
            }
        };
        Self::with(output)
    }

    pub fn silent() -> Self {
        Self::with(Output::Silent)
    }

    fn with(output: Output) -> Self {
        Self {
            output,
            label: String::new(),
            total: 0,
            done: 0,
            started: Instant::now(),
        }
    }

    pub fn start(&mut self, label: &str, total: u64) {
        self.label = label.to_owned();
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        match &mut self.output {
            Output::Bar(bar) => {
                *bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(label.to_owned());
            }
            Output::Lines { last } => {
                *last = Instant::now();
                eprintln!("{label}: 0/{total}");
            }
            Output::Silent => {}
        }
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
        match &mut self.output {
            Output::Bar(bar) => bar.set_position(done),
            Output::Lines { last } if last.elapsed() >= Duration::from_secs(2) => {
                *last = Instant::now();
                eprintln!("{}", self.line());
            }
            _ => {}
        }
    }

    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn line(&self) -> String {
        let rate = self.rate();
        let eta = if rate > 0.0 {
            format!("{:.0}s", self.total.saturating_sub(self.done) as f64 / rate)
        } else {
            "?".to_owned()
        };
        format!(
            "{}: {}/{} ({rate:.0}/s, ETA {eta})",
            self.label, self.done, self.total
        )
    }

    pub fn finish(&mut self, message: &str) {
        let elapsed = self.started.elapsed();
        match &mut self.output {
            Output::Bar(bar) => bar.finish_with_message(format!("{message} in {elapsed:.1?}")),
            Output::Lines { .. } => eprintln!("{message} in {elapsed:.1?}"),
            Output::Silent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_report_rate_and_eta() {
        let mut progress = Progress::with(Output::Lines {
            last: Instant::now() - Duration::from_secs(5),
        });
        progress.start("rebuilding", 100);
        progress.set(50);
        assert!(progress.rate() > 0.0);
        assert!(
            progress.line().starts_with("rebuilding: 50/100 ("),
            "{}",
            progress.line()
        );
        progress.finish("done");
        let mut bar = Progress::with(Output::Bar(ProgressBar::hidden()));
        bar.start("x", 10);
        bar.set(10);
        bar.finish("done");
        let mut silent = Progress::silent();
        silent.start("y", 1);
        silent.set(1);
        silent.finish("done");
    }
}
