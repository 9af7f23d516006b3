//! Temporal super-resolution (256² → 512²): the official `GFPGANv1Clean_UnetWindow` network and its streaming stage.
//!
//! Owns the TSR configuration (`config`), the architecture written once against the generator's `Ops` (`net`), the
//! engine that binds it to ONNX Runtime or burn (`engine`), and the live sliding window (`stream`). Receives generated
//! 256² frames in [0, 1]; emits 512² frames in the same order, one frame later when streaming.

pub mod config;
pub mod net;
pub mod precision_check;
pub mod runner;
pub mod staged_stream;
pub mod stream;
