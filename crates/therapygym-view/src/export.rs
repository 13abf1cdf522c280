//! `therapygym view RUN --export DIR`: the viewer's pages as static files that open from disk
//! or any static host.

use std::path::Path;

use crate::ViewError;
use crate::render::Pages;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub pages: usize,
}

/// Writes `index.html` and `sessions/<slug>.html` into `dir` (new, or an empty directory).
pub fn export(pages: &Pages, dir: &Path) -> Result<Exported, ViewError> {
    let io = |e: std::io::Error| ViewError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !empty {
            return Err(ViewError::Input(format!(
                "{} already exists and is not empty; choose a new `--export` directory",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir.join("sessions")).map_err(io)?;
    // Transcripts read as clinical data: private like the run they come from.
    therapygym_store::fs::set_private(dir);
    therapygym_store::fs::set_private(&dir.join("sessions"));
    let write = |path: &Path, text: &str| {
        therapygym_store::fs::atomic_write(path, text.as_bytes()).map_err(|source| ViewError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    write(&dir.join("index.html"), &pages.index()?)?;
    let mut n = 1;
    for slug in pages.slugs() {
        if let Some(html) = pages.session(&slug)? {
            write(&dir.join("sessions").join(format!("{slug}.html")), &html)?;
            n += 1;
        }
    }
    Ok(Exported { pages: n })
}
