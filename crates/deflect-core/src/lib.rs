//! Pure core of deflect.
//!
//! Everything here is deterministic and free of I/O: events, the per-contact and per-customer journey
//! state machines, event-time intervals in a site time zone, per-partition watermarks, and the metric
//! accumulators. Time is always passed in; nothing here reads a clock.

pub mod codec;
pub mod dims;
pub mod engine;
pub mod event;
pub mod journey;
pub mod metrics;
pub mod pending;
pub mod staffing;
pub mod time;
pub mod watermark;

pub use dims::{Dimensions, DimensionsConfig};
pub use engine::{EngineConfig, PartitionEngine, PartitionSnapshot, StateChanges};
pub use event::{Channel, Event, EventKind};
pub use time::{Interval, IntervalSpec};
