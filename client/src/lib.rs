//! weir's Rust client: send events to weir's ingest so that each is
//! counted exactly once.
//!
//! - [`Uploader`]: one call, one request; the outcome of each event.
//! - [`BatchUploader`]: a bounded queue flushed by count, bytes or interval,
//!   gzipped, retried with exponential backoff and jitter that honours
//!   `Retry-After`, under the **same event ids on every retry**, so a retry
//!   never counts twice. Every event's outcome (accepted, rejected with
//!   ingest's reason, or dropped) reaches your hook, and [`Stats`] counts
//!   them.
//!
//! Events get their id when they are made ([`Event::new`]), not when they
//! are sent: that id is weir's idempotency key.
//!
//! ```no_run
//! use std::time::Duration;
//! use weir_client::{BatchConfig, BatchUploader, ClientConfig, Event, Outcome};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = ClientConfig::new("http://localhost:8080", "weir-demo-key");
//! let uploader = BatchUploader::new(
//!     client,
//!     BatchConfig::default(),
//!     Some(Box::new(|r| {
//!         if let Outcome::Rejected { message } = &r.outcome {
//!             eprintln!("{} was refused: {message}", r.event_id);
//!         }
//!     })),
//! )?;
//! for sku in ["X1", "X2"] {
//!     let event = Event::new("cart.add").user_id("u-42").property("sku", sku);
//!     uploader.send(event).await?;
//! }
//! uploader.close(Duration::from_secs(30)).await?;
//! println!("{:?}", uploader.stats());
//! # Ok(()) }
//! ```
//!
//! One request, answered per event:
//!
//! ```no_run
//! use weir_client::{ClientConfig, Event, Uploader};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let uploader = Uploader::new(ClientConfig::new("http://localhost:8080", "weir-demo-key"))?;
//! let events = vec![Event::new("page_view").user_id("u-1")];
//! // On Err(SendError::Retryable { .. }), send the same `events` again.
//! for result in uploader.send(&events).await? {
//!     println!("{}: {:?}", result.event_id, result.outcome);
//! }
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod batch_uploader;
pub mod event;
pub mod uploader;

pub use backoff::Backoff;
pub use batch_uploader::{BatchConfig, BatchUploader, EnqueueError, FlushError, QueueFull, Stats};
pub use event::Event;
pub use uploader::{ClientConfig, EventResult, Outcome, SendError, Uploader};
