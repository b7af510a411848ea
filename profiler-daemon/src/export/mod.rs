//! Where profiles go. In: encoded profiles with their series labels. Out: files in the
//! bounded dump dir (with the sidecar the page reads) and uploads to a Pyroscope server
//! through a bounded queue, retries, and an on-disk spool while the server is away.

mod delivery;
mod dump;
mod files;
mod pyroscope;
mod response;
mod sidecar;
mod sink;
mod spool;

pub use delivery::{DeliveryConfig, DeliveryStats, Exporter};
pub use dump::{write_atomic, DumpDir, DumpError};
pub use pyroscope::{
    parse_header, parse_url, read_secret, Auth, Client, Protocol, RetryAfter, SendError,
    ServerConfig, ServerConfigError, Upload,
};
pub use sidecar::{
    window_sidecar_name, window_sidecars_for, FiredRule, KeptSummary, Sidecar, ValuePoint,
    CONTINUOUS, SIDECAR_SUFFIX,
};
pub use sink::{DumpSink, KeptProfile, ServerSink, Sink, WindowProfile};
pub use spool::{Spool, SpoolCounts, SpoolError};
