//! Errors about data files: every message names the file, the line (or record) and the field,
//! and says what was expected.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line for line-oriented files; None for whole-file problems.
    pub line: Option<usize>,
    /// The record's id when known (profile id, dialogue id, ...).
    pub id: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(id) = &self.id {
            write!(f, " (`{id}`)")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    #[error("{at}: field `{field}`: {message}")]
    Field {
        at: Location,
        field: String,
        message: String,
    },
    /// Several bad records of one file, found in one pass (the first [`MAX_REPORTED`]).
    #[error("{}", many(errors, *more))]
    Many {
        errors: Vec<DataError>,
        /// Bad records beyond the ones listed.
        more: usize,
    },
}

/// How many bad records a loader lists before it only counts the rest.
pub const MAX_REPORTED: usize = 20;

fn many(errors: &[DataError], more: usize) -> String {
    let mut s = format!("{} problems:", errors.len() + more);
    for e in errors {
        s.push_str(&format!("\n  {e}"));
    }
    if more > 0 {
        s.push_str(&format!("\n  … and {more} more"));
    }
    s
}

/// Collects the bad records of a file, so one pass reports them all (up to [`MAX_REPORTED`]).
#[derive(Debug, Default)]
pub struct Problems {
    errors: Vec<DataError>,
    more: usize,
}

impl Problems {
    pub fn push(&mut self, e: DataError) {
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(e);
        } else {
            self.more += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when nothing was wrong; one error as itself; several as [`DataError::Many`].
    pub fn finish(mut self) -> Result<(), DataError> {
        match (self.errors.len(), self.more) {
            (0, _) => Ok(()),
            (1, 0) => Err(self.errors.remove(0)),
            _ => Err(DataError::Many {
                errors: self.errors,
                more: self.more,
            }),
        }
    }
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(at: Location, message: impl Into<String>) -> Self {
        DataError::Invalid {
            at,
            message: message.into(),
        }
    }

    pub fn field(at: Location, field: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Field {
            at,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads a file, mapping the error to one that names the path.
pub fn read_to_string(path: &std::path::Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}
