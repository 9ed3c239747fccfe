//! What happens to a partition as it changes hands: on assignment its state
//! is restored from the changelog as of its committed offset and the
//! instance claims it (ending a dead predecessor's open transaction); after
//! a failed batch every assigned partition is rewound to its last commit.

use crate::changelog::format::{last_owner, owner_record};
use crate::changelog::kafka::{read_partition, state_record};
use crate::changelog::StateRecord;
use crate::dedup::DedupStore;
use crate::partition::PartitionState;
use crate::runtime::{Part, Processor};
use crate::sink::{Mode, OutputSink};
use crate::spill::RedbColdStore;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

impl Processor {
    /// Loads partition `p` as of its committed offset.
    #[tracing::instrument(name = "restore_partition", skip(self))]
    pub(crate) async fn restore(&self, p: i32) -> anyhow::Result<Part> {
        let started = Instant::now();
        let committed = self.committed_offset(p)?;
        let kafka = self.cfg.kafka.clone();
        let topic = self.cfg.topics.state.clone();
        let prefix = format!("{p}/");
        let records =
            tokio::task::spawn_blocking(move || read_partition(&kafka, &topic, p, &prefix))
                .await??;
        let n = records.len();
        self.claim(p, &records, committed).await?;
        let dedup = if self.cfg.dedup_max_memory_keys > 0 {
            let dir = std::path::Path::new(&self.cfg.dedup_spill_dir).join(&self.cfg.instance_id);
            let cold = RedbColdStore::create(&dir, p)?;
            DedupStore::spilling(Box::new(cold), self.cfg.dedup_max_memory_keys)
        } else {
            DedupStore::new()
        };
        let state = PartitionState::restore_into(dedup, p, self.rules.clone(), records, committed)?;
        let next = match committed {
            Some(c) => c,
            None => {
                self.consumer
                    .fetch_watermarks(&self.cfg.topics.raw, p, Duration::from_secs(10))?
                    .0
            }
        };
        let secs = started.elapsed().as_secs_f64();
        metrics::histogram!("weir_processor_restore_seconds").record(secs);
        tracing::info!(partition = p, committed = ?committed, changelog_records = n, dedup_keys = state.dedup_len(), open_windows = state.open_windows(), counted_in_open_windows = state.open_window_counts().iter().map(|w| w.1).sum::<i64>(), seconds = secs, "partition state restored");
        Ok(Part {
            state,
            next,
            last_input: Instant::now(),
            touched: false,
        })
    }

    /// Makes this instance the recorded owner of partition `p` before it
    /// processes any of it. If another instance claimed it last, it may have
    /// died inside a transaction, which some brokers (nisshi 0.7) never time
    /// out: it stalls every read_committed reader of the outputs until that
    /// transactional.id initialises again, which a dead instance never does.
    /// So the new owner does it once, ending that transaction (and fencing
    /// the previous owner, if it still lives: it then starts a new producer).
    async fn claim(
        &self,
        p: i32,
        records: &[StateRecord],
        committed: Option<i64>,
    ) -> anyhow::Result<()> {
        let me = &self.cfg.instance_id;
        let previous = last_owner(records);
        if previous.as_deref() == Some(me.as_str()) {
            return Ok(());
        }
        if let (Some(previous), Mode::ExactlyOnce) = (&previous, self.sink.mode()) {
            OutputSink::end_dangling_transaction(&self.cfg, previous).await?;
            tracing::info!(
                partition = p,
                previous,
                "ended the previous owner's open transaction"
            );
        }
        let claim = owner_record(me, committed.map_or(-1, |c| c - 1));
        let record = state_record(&self.cfg.topics.state, p, claim);
        self.claims
            .send(record.to_future_record(), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("recording the owner of partition {p}: {e}"))?;
        Ok(())
    }

    pub(crate) fn committed_offset(&self, p: i32) -> anyhow::Result<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.cfg.topics.raw, p);
        let got = tokio::task::block_in_place(|| {
            self.consumer
                .committed_offsets(tpl, Duration::from_secs(10))
        })?;
        Ok(got.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }))
    }

    /// Aborts the batch and positions every assigned partition at its
    /// committed offset; state is restored again on the next record.
    pub(crate) async fn rewind(&mut self) -> anyhow::Result<()> {
        self.batch_len = 0;
        let parts: Vec<i32> = self.parts.drain().map(|(p, _)| p).collect();
        // Abort what can be aborted, then always start a new producer: its
        // init_transactions bumps the epoch and ends whatever the old one left
        // open, and no sequence state of the failed batch leaks into the next
        // (a producer that merely aborted can still fail its next batch with
        // "skipped sequence numbers"; the mock-cluster tests show it).
        if let Err(e) = self.sink.abort() {
            tracing::warn!(error = %e, fatal = ?self.sink.fatal_error(), "abort failed");
        }
        self.sink = OutputSink::build(&self.cfg).await?;
        for p in parts {
            let offset = match self.committed_offset(p)? {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            if let Err(e) =
                self.consumer
                    .seek(&self.cfg.topics.raw, p, offset, Duration::from_secs(10))
            {
                tracing::warn!(partition = p, error = %e, "seek failed; the partition restarts from its committed offset on the next assignment");
            }
        }
        Ok(())
    }
}
