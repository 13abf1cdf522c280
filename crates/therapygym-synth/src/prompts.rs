//! The synthesis prompts are data: minijinja templates under `data/prompts/synth/`, compiled in
//! and replaceable file by file (`SynthPrompts::with_overrides`). Their sources are stored in the
//! run directory, so a resumed run asks exactly what the first attempt asked.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use therapygym_core::Template;

use crate::error::SynthError;

/// Template names, each shipped as `data/prompts/synth/<name>.j2`.
pub const NAMES: [&str; 8] = [
    "system",
    "task",
    "sample",
    "dimension",
    "assign",
    "expand",
    "profile",
    "repair",
];

const BUILTIN: [(&str, &str); 8] = [
    (
        "system",
        include_str!("../../../data/prompts/synth/system.j2"),
    ),
    ("task", include_str!("../../../data/prompts/synth/task.j2")),
    (
        "sample",
        include_str!("../../../data/prompts/synth/sample.j2"),
    ),
    (
        "dimension",
        include_str!("../../../data/prompts/synth/dimension.j2"),
    ),
    (
        "assign",
        include_str!("../../../data/prompts/synth/assign.j2"),
    ),
    (
        "expand",
        include_str!("../../../data/prompts/synth/expand.j2"),
    ),
    (
        "profile",
        include_str!("../../../data/prompts/synth/profile.j2"),
    ),
    (
        "repair",
        include_str!("../../../data/prompts/synth/repair.j2"),
    ),
];

/// The template sources by name (all of `NAMES`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthPrompts {
    pub sources: BTreeMap<String, String>,
}

impl Default for SynthPrompts {
    fn default() -> Self {
        Self {
            sources: BUILTIN
                .iter()
                .map(|(n, s)| ((*n).to_string(), (*s).to_string()))
                .collect(),
        }
    }
}

impl SynthPrompts {
    /// The shipped templates, with any `<name>.j2` found in `dir` replacing its namesake.
    pub fn with_overrides(dir: &Path) -> Result<Self, SynthError> {
        if !dir.is_dir() {
            return Err(SynthError::Config(format!(
                "prompt directory {} does not exist",
                dir.display()
            )));
        }
        let mut p = Self::default();
        for name in NAMES {
            let path = dir.join(format!("{name}.j2"));
            if path.is_file() {
                let t = Template::from_file(&path)?;
                p.sources.insert(name.to_string(), t.source);
            }
        }
        p.check()?;
        Ok(p)
    }

    /// Every template is present and compiles.
    pub fn check(&self) -> Result<(), SynthError> {
        for name in NAMES {
            self.template(name)?.check()?;
        }
        Ok(())
    }

    pub fn template(&self, name: &str) -> Result<Template, SynthError> {
        self.sources
            .get(name)
            .map(|s| Template::new(format!("synth/{name}.j2"), s.clone()))
            .ok_or_else(|| SynthError::Config(format!("missing synthesis prompt `{name}`")))
    }

    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.sources
            .iter()
            .map(|(n, s)| (n.clone(), therapygym_core::hash::text_hash(s)))
            .collect()
    }
}

/// Compiled templates for the hot path (compiling once per run, not once per call).
pub(crate) struct Compiled {
    env: minijinja::Environment<'static>,
}

impl Compiled {
    pub fn new(p: &SynthPrompts) -> Result<Self, SynthError> {
        p.check()?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        for name in NAMES {
            let src = p.sources.get(name).cloned().unwrap_or_default();
            env.add_template_owned(name.to_string(), src)
                .map_err(|e| SynthError::Config(format!("prompt `{name}`: {e}")))?;
        }
        Ok(Self { env })
    }

    pub fn render<C: Serialize>(&self, name: &str, ctx: C) -> Result<String, SynthError> {
        self.render_value(name, minijinja::Value::from(minijinja::value::Serde(&ctx)))
    }

    /// Renders with a ready context (hot paths share pre-built values instead of serialising
    /// them per call).
    pub fn render_value(&self, name: &str, ctx: minijinja::Value) -> Result<String, SynthError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| SynthError::Config(format!("prompt `{name}`: {e}")))?;
        t.render(ctx).map(|s| s.trim().to_string()).map_err(|e| {
            let mut msg = format!("prompt `{name}` does not render: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                msg.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            SynthError::Config(msg)
        })
    }
}
