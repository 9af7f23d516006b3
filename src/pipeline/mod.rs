//! The pipeline: the threads of `live`, `render` and `demo` and the bounded channels between them.
//!
//! Owns stage wiring, shutdown and statistics. Every stage runs on its own thread and talks to the next only through
//! a `channel::latest` channel, so a slow stage drops stale frames instead of queueing latency.

pub mod bench;
pub mod channel;
pub mod demo;
pub mod engine;
pub mod live;
pub mod looping;
pub mod messages;
pub mod personalizer;
pub mod render;
pub mod settings;
