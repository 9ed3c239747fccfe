//! The chaos run from the command line (see `tests/chaos/mod.rs`):
//!
//! ```text
//! cargo build --release --bins
//! cargo run --release -p weir-tests --bin chaos -- --profile full [--seed 1] [--events N] [--rate R]
//! ```
//!
//! Prints the summary table and exits non-zero if any event was lost or
//! doubled, or anything else broke the promise.

use weir_tests::chaos::{run, Profile};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seed = value("--seed").map_or(Ok(1), |s| s.parse())?;
    let mut profile = match value("--profile").as_deref() {
        None | Some("ci") => Profile::ci(seed),
        Some("full") => Profile::full(seed),
        Some(other) => anyhow::bail!("unknown profile {other:?}: ci or full"),
    };
    if let Some(n) = value("--events") {
        profile.events = n.parse()?;
    }
    if let Some(r) = value("--rate") {
        profile.rate = r.parse()?;
    }
    let summary = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(&profile))?;
    println!("{summary}");
    let violations = summary.violations();
    if violations.is_empty() {
        println!("the promise held: every acknowledged event counted exactly once");
        Ok(())
    } else {
        anyhow::bail!("the promise broke:\n  {}", violations.join("\n  "))
    }
}
