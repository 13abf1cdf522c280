//! Pages: minijinja templates with HTML auto-escaping (every value a template prints is escaped
//! unless it is our own SVG, CSS or script, marked `|safe`), one stylesheet, and a Content
//! Security Policy that runs only the page's own inline script (by hash) and fetches nothing.

use minijinja::{Environment, Value as Ctx};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ReportError;

/// The stylesheet every page embeds: system fonts only, readable tables, print rules.
pub const STYLE: &str = include_str!("../templates/style.css");

const TEMPLATES: [(&str, &str); 5] = [
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("report.html", include_str!("../templates/report.html")),
    (
        "leaderboard.html",
        include_str!("../templates/leaderboard.html"),
    ),
    ("validate.html", include_str!("../templates/validate.html")),
];

/// An environment with this crate's templates; other crates add theirs (names ending in
/// `.html` are auto-escaped).
pub fn environment() -> Result<Environment<'static>, ReportError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    add_templates(&mut env, &TEMPLATES)?;
    env.add_filter("num", num);
    env.add_filter("pct", pct);
    env.add_filter("signed", signed);
    env.add_filter("thousands", thousands);
    Ok(env)
}

/// Adds `(name, source)` templates to `env`.
pub fn add_templates(
    env: &mut Environment<'static>,
    templates: &[(&'static str, &'static str)],
) -> Result<(), ReportError> {
    for (name, text) in templates {
        env.add_template(name, text)
            .map_err(|source| ReportError::Render {
                what: name.to_string(),
                source,
            })?;
    }
    Ok(())
}

/// `{{ x|num(2) }}`: fixed digits, `—` for none.
fn num(v: Option<f64>, digits: Option<usize>) -> String {
    v.map(|x| format!("{x:.*}", digits.unwrap_or(2)))
        .unwrap_or_else(|| "—".into())
}

/// `{{ rate|pct }}`: a share as a percentage with one decimal.
fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}%", x * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// `{{ d|signed(3) }}`: with an explicit sign.
fn signed(v: Option<f64>, digits: Option<usize>) -> String {
    v.map(|x| format!("{x:+.*}", digits.unwrap_or(3)))
        .unwrap_or_else(|| "—".into())
}

/// `{{ n|thousands }}`: 1234567 → 1 234 567 (thin spaces).
fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page's Content Security Policy: nothing is fetched (no network, no CDN, no font); the
/// only script that runs is `script` (by its SHA-256); styles and images are inline.
pub fn csp(script: Option<&str>) -> String {
    let script_src = match script {
        Some(s) => format!("'sha256-{}'", base64(&Sha256::digest(s.as_bytes()))),
        None => "'none'".to_string(),
    };
    format!(
        "default-src 'none'; script-src {script_src}; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    )
}

/// JSON that is safe inside `<script type="application/json">`: `<`, `>` and `&` escaped, so
/// no text can close the element.
pub fn json_for_script<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// A template value from anything serialisable.
pub fn ser<T: Serialize + ?Sized>(v: &T) -> Ctx {
    Ctx::from(minijinja::value::Serde(v))
}

/// Renders template `name` with `ctx` plus the page essentials (`css`, `csp`, `script`).
pub fn render(
    env: &Environment<'_>,
    name: &str,
    ctx: Ctx,
    script: Option<&str>,
) -> Result<String, ReportError> {
    let page = minijinja::context! {
        css => STYLE,
        csp => csp(script),
        script => script,
        ..ctx
    };
    env.get_template(name)
        .and_then(|t| t.render(page))
        .map_err(|source| ReportError::Render {
            what: name.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_csp() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // echo -n 'x' | openssl dgst -sha256 -binary | base64
        assert!(csp(Some("x")).contains("'sha256-LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE='"));
        assert!(csp(None).contains("script-src 'none'"));
    }

    #[test]
    fn script_json_cannot_close_its_element() {
        let s =
            json_for_script(&serde_json::json!({"t": "</script><img src=x onerror=alert(1)>&"}));
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["t"], "</script><img src=x onerror=alert(1)>&");
    }

    #[test]
    fn templates_escape_model_text() {
        let mut env = environment().unwrap();
        env.add_template("t.html", "{{ x }}").unwrap();
        let out = env
            .get_template("t.html")
            .unwrap()
            .render(minijinja::context! { x => "<script>alert(1)</script><img src=x onerror=alert(2)>" })
            .unwrap();
        assert!(!out.contains('<'), "{out}");
        assert!(out.contains("&lt;script&gt;"));
        assert_eq!(num(Some(1.23456), Some(2)), "1.23");
        assert_eq!(num(None, None), "—");
        assert_eq!(pct(Some(0.125)), "12.5%");
        assert_eq!(signed(Some(0.5), Some(1)), "+0.5");
        assert_eq!(thousands(1_234_567), "1\u{2009}234\u{2009}567");
    }
}
