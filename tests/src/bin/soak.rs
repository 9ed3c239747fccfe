//! Soak profile on the real local stack (a load run, not a timed test); the
//! run, its samples and its growth rule are `weir_tests::soak`
//! (`tests/src/soak/`).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin soak -- \
//!   [--minutes 10] [--rate 2000] [--sample-secs 10] [--warmup-secs 120] [--batch 100] \
//!   [--dedup-horizon-secs 125]`

use weir_tests::soak::{run, Args};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The settings from the command line; unset flags keep their defaults.
fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        minutes: 10.0,
        rate: 2_000.0,
        sample_secs: 10.0,
        warmup_secs: None,
        batch: 100,
        dedup_horizon_secs: 125,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => a.minutes = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--sample-secs" => a.sample_secs = value.parse()?,
            "--warmup-secs" => a.warmup_secs = Some(value.parse()?),
            "--batch" => a.batch = value.parse()?,
            "--dedup-horizon-secs" => a.dedup_horizon_secs = value.parse()?,
            _ => anyhow::bail!(
                "unknown flag {flag}; flags: --minutes --rate --sample-secs --warmup-secs --batch --dedup-horizon-secs"
            ),
        }
    }
    anyhow::ensure!(
        a.minutes > 0.0 && a.rate > 0.0 && a.sample_secs > 0.0 && a.batch > 0,
        "--minutes, --rate, --sample-secs and --batch must be positive"
    );
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    // The stack and its processes are dropped (killed) before the exit.
    let ok = run(a).await?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
