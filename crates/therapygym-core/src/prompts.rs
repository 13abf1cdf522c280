//! Prompt templates (minijinja) are data: shipped under `data/prompts/`, replaceable by a file,
//! and hashed into every run's manifest.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::error::{DataError, Location, read_to_string};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Template {
    /// Built-in name (`cbt`) or the file path it came from.
    pub name: String,
    pub source: String,
}

impl Template {
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let source = read_to_string(path)?;
        let t = Self::new(path.display().to_string(), source);
        t.check()?;
        Ok(t)
    }

    pub fn hash(&self) -> String {
        crate::hash::text_hash(&self.source)
    }

    fn env(&self) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env
    }

    /// Compiles the template without rendering (catches syntax errors at load time).
    pub fn check(&self) -> Result<(), DataError> {
        let env = self.env();
        env.template_from_str(&self.source)
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    pub fn render<C: Serialize>(&self, ctx: C) -> Result<String, DataError> {
        let env = self.env();
        let tmpl = env
            .template_from_str(&self.source)
            .map_err(|e| self.error(&e))?;
        let out = tmpl
            .render(minijinja::Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| self.error(&e))?;
        Ok(out.trim().to_string())
    }

    fn error(&self, e: &minijinja::Error) -> DataError {
        let mut msg = format!("template error: {e}");
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            msg.push_str(&format!(": {inner}"));
            src = inner.source();
        }
        DataError::invalid(
            Location {
                file: self.name.clone().into(),
                line: e.line(),
                id: None,
            },
            msg,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_undefined_and_pycompat() {
        let t = Template::new(
            "t",
            "{{ name.upper() }} {% for x in xs %}{{ x }}{% endfor %}",
        );
        assert_eq!(
            t.render(json!({"name": "abe", "xs": [1, 2]})).unwrap(),
            "ABE 12"
        );
        let e = t.render(json!({"xs": []})).unwrap_err().to_string();
        assert!(e.contains("template error"), "{e}");
        assert!(Template::new("bad", "{% if %}").check().is_err());
    }
}
