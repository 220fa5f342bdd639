//! Running one step on many hosts at once.
//!
//! A bounded pool (`buffer_unordered`) keeps at most `concurrency` hosts busy
//! and hands the next host to whichever slot frees first, so a slow host
//! holds back no one else. A failing host does not stop the others: each
//! finishes the step, and the step then fails naming every failed host.

use std::fmt;
use std::future::Future;

use futures::stream::{self, StreamExt};

use crate::printer::HostProgress;

/// Hosts on which a step failed, each with its error.
#[derive(Debug)]
pub(crate) struct HostFailures {
    pub(crate) step: String,
    pub(crate) failures: Vec<(String, anyhow::Error)>,
}

impl fmt::Display for HostFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .failures
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        write!(
            f,
            "step `{}` failed on {} host{} ({})",
            self.step,
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )?;
        for (name, error) in &self.failures {
            write!(f, "\n  {name}: {}: {error:#}", self.step)?;
        }
        Ok(())
    }
}

impl std::error::Error for HostFailures {}

/// Run `work` for every item (named by `name`), at most `concurrency` at a
/// time; progress lines per host (each host's summary shown at normal
/// verbosity when `report`, else only with `--verbose`); results in input
/// order, or every failure.
pub(crate) async fn for_each_host<'a, T, R, F, Fut>(
    items: &'a [T],
    name: impl Fn(&T) -> &str,
    concurrency: usize,
    step: &str,
    report: bool,
    progress: &HostProgress,
    work: F,
) -> Result<Vec<R>, HostFailures>
where
    F: Fn(&'a T) -> Fut,
    Fut: Future<Output = anyhow::Result<(R, String)>>,
{
    let work = &work;
    let name = &name;
    let mut results: Vec<(usize, anyhow::Result<R>)> = stream::iter(items.iter().enumerate())
        .map(|(index, item)| async move {
            let host = name(item);
            progress.start(host, step);
            let result = work(item).await;
            match result {
                Ok((value, summary)) => {
                    progress.finish(host, step, &summary, report);
                    (index, Ok(value))
                }
                Err(error) => {
                    progress.fail(host, step, &format!("{error:#}"));
                    (index, Err(error))
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(index, _)| *index);
    let mut values = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (index, result) in results {
        match result {
            Ok(value) => values.push(value),
            Err(error) => failures.push((name(&items[index]).to_string(), error)),
        }
    }
    if failures.is_empty() {
        Ok(values)
    } else {
        Err(HostFailures {
            step: step.to_string(),
            failures,
        })
    }
}
