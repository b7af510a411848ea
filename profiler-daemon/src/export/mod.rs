//! Where profiles go. In: encoded profiles with their series labels. Out: files in the
//! bounded dump dir (with the sidecar the page reads) and uploads to a Pyroscope server
//! through a bounded queue, retries, and an on-disk spool while the server is away.

mod delivery;
mod dump;
mod pyroscope;
mod sidecar;
mod sink;
mod spool;

pub use delivery::{DeliveryConfig, DeliveryStats, Exporter};
pub use dump::{ensure_writable_dir, write_atomic, DumpDir, DumpError};
pub use pyroscope::{
    parse_header, parse_url, read_secret, Auth, Client, Protocol, SendError, ServerConfig,
    ServerConfigError, Upload,
};
pub use sidecar::{KeptSummary, SIDECAR_SUFFIX};
pub use sink::{DumpSink, KeptProfile, ServerSink, Sink, WindowProfile};
pub use spool::{Spool, SpoolError};
