//! The judge reads a whole session and returns every rubric item as `{rationale, score}` and
//! every enabled safety label as `{evidence, flag}` in one structured call. Replies are parsed
//! and validated by us whatever the server promised; up to `retries` re-asks carry the
//! validation error; after that the session is *unscored* with the reason — never 0.

mod calibration;
mod judge;
mod parse;
mod schema;

pub use calibration::{Calibration, ItemMap, fit_isotonic};
pub use judge::{Judge, JudgeConfig, JudgeRecord, SampleRecord};
pub use parse::{Invalid, parse_judgment};
pub use schema::judgment_schema;
