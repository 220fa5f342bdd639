//! `--timings`: where a run's wall time goes, step by step.
//!
//! Steps are recorded as spans; the spans of one step taken on many hosts
//! are merged into one line (from the first start to the last end, with the
//! number of hosts and the mean time each host spent in it). Steps overlap
//! when a run does them at once (connecting to hosts while the store is
//! checked), which is why each line has its own start.
//!
//! Recording costs nothing unless `--timings` was given.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Recorder {
    /// When `main` started.
    started: Instant,
    /// From `exec` to `main`, when the kernel says.
    process_start: Option<Duration>,
    spans: Mutex<Vec<Span>>,
}

struct Span {
    step: &'static str,
    start: Duration,
    end: Duration,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Start recording (the `--timings` flag), counting from `started` (taken
/// first thing in `main`).
pub fn enable(started: Instant) {
    let _ = RECORDER.set(Recorder {
        started,
        process_start: since_exec(),
        spans: Mutex::new(Vec::new()),
    });
}

/// A step in progress: recorded when dropped.
#[must_use = "the step is recorded when this is dropped"]
pub struct Timer {
    step: &'static str,
    start: Option<Instant>,
}

/// Time `step` from now until the returned timer is dropped.
pub fn step(step: &'static str) -> Timer {
    Timer {
        step,
        start: RECORDER.get().map(|_| Instant::now()),
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let (Some(recorder), Some(start)) = (RECORDER.get(), self.start) else {
            return;
        };
        let span = Span {
            step: self.step,
            start: start.saturating_duration_since(recorder.started),
            end: recorder.started.elapsed(),
        };
        if let Ok(mut spans) = recorder.spans.lock() {
            spans.push(span);
        }
    }
}

/// Time `future` as `step`.
pub async fn time<T>(step: &'static str, future: impl std::future::Future<Output = T>) -> T {
    let _timer = self::step(step);
    future.await
}

/// The table of recorded steps, or `None` without `--timings`.
pub fn report() -> Option<String> {
    let recorder = RECORDER.get()?;
    let total = recorder.started.elapsed();
    let spans = recorder.spans.lock().ok()?;
    // One line per step, in the order steps first started.
    let mut steps: Vec<(&'static str, Duration, Duration, usize, Duration)> = Vec::new();
    for span in spans.iter() {
        let took = span.end.saturating_sub(span.start);
        match steps.iter_mut().find(|line| line.0 == span.step) {
            Some(line) => {
                line.1 = line.1.min(span.start);
                line.2 = line.2.max(span.end);
                line.3 += 1;
                line.4 += took;
            }
            None => steps.push((span.step, span.start, span.end, 1, took)),
        }
    }
    steps.sort_by_key(|line| line.1);
    let mut out = String::from("timings:\n");
    out.push_str(&format!(
        "  {:<18} {:>9} {:>9} {:>6} {:>12}\n",
        "step", "start", "took", "count", "mean each"
    ));
    let process_start = match recorder.process_start {
        Some(took) => format!("{:>9}", seconds(took)),
        None => format!("{:>9}", "?"),
    };
    out.push_str(&format!(
        "  {:<18} {:>9} {process_start}\n",
        "process start",
        seconds(Duration::ZERO)
    ));
    for (step, start, end, count, sum) in steps {
        let took = end.saturating_sub(start);
        let mean = sum / u32::try_from(count).unwrap_or(u32::MAX).max(1);
        if count > 1 {
            out.push_str(&format!(
                "  {step:<18} {:>9} {:>9} {count:>6} {:>12}\n",
                seconds(start),
                seconds(took),
                seconds(mean)
            ));
        } else {
            out.push_str(&format!(
                "  {step:<18} {:>9} {:>9}\n",
                seconds(start),
                seconds(took)
            ));
        }
    }
    out.push_str(&format!(
        "  {:<18} {:>9} {:>9}\n",
        "total",
        seconds(Duration::ZERO),
        seconds(total)
    ));
    out.push_str(
        "  (start: seconds after main began; process start: exec to main, to the kernel's 10 ms tick)\n",
    );
    Some(out)
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

/// How long ago this process was exec'd, from `/proc/self/stat` (its start
/// in clock ticks since boot) and `CLOCK_BOOTTIME`.
fn since_exec() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at ")".
    let after = stat.rsplit_once(')')?.1;
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf and clock_gettime only read; `now` is a valid
    // timespec to fill.
    let ticks_per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    let now = Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    );
    let started =
        Duration::from_nanos(start_ticks.saturating_mul(1_000_000_000) / ticks_per_second.max(1));
    Some(now.saturating_sub(started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_on_many_hosts_merge_into_one_line() {
        enable(Instant::now());
        {
            let _a = step("state read");
            let _b = step("state read");
            std::thread::sleep(Duration::from_millis(5));
        }
        {
            let _c = step("render");
        }
        let report = report().expect("enabled");
        let line = report
            .lines()
            .find(|line| line.trim_start().starts_with("state read"))
            .expect("a state read line");
        assert!(
            line.split_whitespace().any(|field| field == "2"),
            "{report}"
        );
        assert_eq!(
            report
                .lines()
                .filter(|line| line.contains("state read"))
                .count(),
            1,
            "{report}"
        );
        assert!(report.contains("process start"), "{report}");
        assert!(report.contains("total"), "{report}");
    }
}
