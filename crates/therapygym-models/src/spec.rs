//! Model specs: the one syntax used wherever a model is chosen.
//!
//! - `embedded` — the SmolLM2-135M-Instruct GGUF installed by `scripts/setup.sh`
//! - `gguf:PATH` — any local GGUF file (llama.cpp)
//! - `openai:MODEL@BASE_URL[#key=VAR]` — any OpenAI-compatible chat-completions server; `VAR`
//!   names the environment variable holding this endpoint's API key
//! - `scripted:MODE` — the deterministic fake for tests (never a product default)

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ModelError;
use crate::util::{redact_text, redact_url};

/// `Debug` prints what `Display` prints: a URL's credentials never reach a log.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ModelSpec {
    Embedded,
    Gguf(PathBuf),
    OpenAi {
        model: String,
        base_url: String,
        /// The environment variable holding this endpoint's key (`#key=VAR`); None: the global
        /// `THERAPYGYM_API_KEY` / `OPENAI_API_KEY`, sent over https only.
        key_env: Option<String>,
    },
    Scripted(ScriptedMode),
}

impl fmt::Debug for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelSpec({self})")
    }
}

/// A spec as it may be stored, printed or logged: URL credentials masked. Text that is not a
/// valid spec is masked the same way.
pub fn redact_spec(spec: &str) -> String {
    match spec.parse::<ModelSpec>() {
        Ok(s) => s.to_string(),
        Err(_) => redact_text(spec),
    }
}

/// Behaviours of the scripted fake. `N` variants fail or misbehave that many times, then behave.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScriptedMode {
    /// Reply with the last user message (or a schema-valid value when a schema is asked).
    Echo,
    /// Reply with this text as given, under a JSON schema too (to test schema failures).
    Fixed(String),
    /// Like `echo`, after sleeping this long.
    Slow(Duration),
    /// Fail with a transient error (HTTP 503) N times per distinct request, then echo.
    Flaky(u32),
    /// Answer 429 with `Retry-After: secs`; `times` = None means always.
    RateLimit { secs: u64, times: Option<u32> },
    /// HTTP 500; `times` = None means always.
    Http500 { times: Option<u32> },
    /// A reply that is not JSON (first `times` calls of this model, or always).
    MalformedJson { times: Option<u32> },
    /// A schema-shaped reply with one integer out of its range.
    OutOfRange { times: Option<u32> },
    /// A schema-shaped reply with one required key removed.
    MissingItem { times: Option<u32> },
    /// A reply cut off at `max_tokens` (finish reason `length`).
    Truncated { times: Option<u32> },
    /// A refusal in prose, ignoring any schema.
    Refusal,
    /// Never answers (the attempt timeout must fire).
    Hang,
    /// Like `echo`, but a prompt of more than this many words fails with `context_overflow`,
    /// as a model with a small context window does.
    Context(u32),
    /// A permanent error (HTTP 400, not retried): a request the endpoint will never accept.
    Fatal,
    /// The first rule whose needle occurs in the request's text (any message) picks the mode,
    /// else the `*` rule (`echo` when there is none):
    /// `when:Daniel=fatal;Maya=malformed_json;*=flaky:1`, so one run can hold sessions that
    /// fail in different ways. Needles cannot contain `;` or `=`; rules cannot nest `when`.
    When {
        rules: Vec<(String, ScriptedMode)>,
        otherwise: Box<ScriptedMode>,
    },
    /// Call k (of this model) behaves as mode k mod n of the list, each mode without its own
    /// count (`cycle:rate_limit:0,http_500,malformed_json,echo`): a mix of faults under load.
    /// Modes inside a cycle cannot contain commas, nor be cycles.
    Cycle(Vec<ScriptedMode>),
}

impl ModelSpec {
    /// Whether the spec names a local llama.cpp model.
    pub fn is_local(&self) -> bool {
        matches!(self, ModelSpec::Embedded | ModelSpec::Gguf(_))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            ModelSpec::Embedded => "embedded",
            ModelSpec::Gguf(_) => "gguf",
            ModelSpec::OpenAi { .. } => "openai",
            ModelSpec::Scripted(_) => "scripted",
        }
    }
}

impl FromStr for ModelSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "embedded" {
            return Ok(ModelSpec::Embedded);
        }
        if let Some(path) = s.strip_prefix("gguf:") {
            if path.is_empty() {
                return Err(bad_spec(
                    s,
                    "`gguf:` needs a file path, e.g. `gguf:models/my.gguf`",
                ));
            }
            return Ok(ModelSpec::Gguf(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("openai:") {
            let (rest, key_env) = match rest.rsplit_once("#key=") {
                Some((r, var)) => (r, Some(key_var(s, var)?)),
                None => (rest, None),
            };
            // The model id may itself contain '@'; the base URL starts at the '@' before the scheme.
            let split = rest
                .find("@http://")
                .or_else(|| rest.find("@https://"))
                .or_else(|| rest.rfind('@'));
            let Some(at) = split else {
                return Err(bad_spec(
                    s,
                    "`openai:` needs MODEL@BASE_URL, e.g. `openai:gpt-4o-mini@https://api.openai.com/v1`",
                ));
            };
            let (model, base_url) = (&rest[..at], &rest[at + 1..]);
            if model.is_empty()
                || !(base_url.starts_with("http://") || base_url.starts_with("https://"))
            {
                return Err(bad_spec(
                    s,
                    "`openai:` needs MODEL@BASE_URL with an http(s) URL, e.g. `openai:qwen@http://127.0.0.1:8000/v1`",
                ));
            }
            return Ok(ModelSpec::OpenAi {
                model: model.to_string(),
                base_url: base_url.trim_end_matches('/').to_string(),
                key_env,
            });
        }
        if let Some(mode) = s.strip_prefix("scripted:") {
            return ScriptedMode::from_str(mode)
                .map(ModelSpec::Scripted)
                .map_err(|why| bad_spec(s, &why));
        }
        Err(bad_spec(
            s,
            "expected `embedded`, `gguf:PATH`, `openai:MODEL@BASE_URL` or `scripted:MODE`",
        ))
    }
}

/// The variable name of `#key=VAR`: a shell-style identifier.
fn key_var(spec: &str, var: &str) -> Result<String, ModelError> {
    let ok = var
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(var.to_string())
    } else {
        // Someone may have pasted the key itself here: never echo it.
        Err(bad_spec(
            &spec.replace(var, "****"),
            "`#key=` needs the name of an environment variable (letters, digits, `_`), e.g. `#key=JUDGE_KEY`, never the key itself",
        ))
    }
}

fn bad_spec(spec: &str, why: &str) -> ModelError {
    ModelError::config(format!("invalid model spec `{}`: {why}", redact_text(spec)))
}

impl fmt::Display for ModelSpec {
    /// Display never shows credentials (safe for manifests and logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Embedded => f.write_str("embedded"),
            ModelSpec::Gguf(p) => write!(f, "gguf:{}", p.display()),
            ModelSpec::OpenAi {
                model,
                base_url,
                key_env,
            } => {
                write!(f, "openai:{model}@{}", redact_url(base_url))?;
                match key_env {
                    Some(v) => write!(f, "#key={v}"),
                    None => Ok(()),
                }
            }
            ModelSpec::Scripted(m) => write!(f, "scripted:{m}"),
        }
    }
}

const SCRIPTED_MODES: &str = "echo, fixed:TEXT, slow:MS, flaky:N, rate_limit[:SECS[:N]], http_500[:N], \
malformed_json[:N], out_of_range[:N], missing_item[:N], truncated[:N], refusal, hang, context:WORDS, fatal, \
cycle:MODE,MODE,…, when:NEEDLE=MODE;…;*=MODE";

impl FromStr for ScriptedMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |what: &str| -> Result<u64, String> {
            let a = arg.ok_or_else(|| format!("`{name}` needs {what}, e.g. `{name}:3`"))?;
            a.parse::<u64>()
                .map_err(|_| format!("`{name}:{a}`: {what} must be a whole number"))
        };
        let times = || -> Result<Option<u32>, String> {
            match arg {
                None => Ok(None),
                Some(a) => a
                    .parse::<u32>()
                    .map(Some)
                    .map_err(|_| format!("`{name}:{a}`: the count must be a whole number")),
            }
        };
        Ok(match name {
            "echo" => ScriptedMode::Echo,
            "fixed" => ScriptedMode::Fixed(arg.unwrap_or("").to_string()),
            "slow" => ScriptedMode::Slow(Duration::from_millis(num("milliseconds")?)),
            "flaky" => ScriptedMode::Flaky(
                u32::try_from(num("a failure count")?).map_err(|e| e.to_string())?,
            ),
            "rate_limit" => {
                let (secs, times) = match arg {
                    None => (1, None),
                    Some(a) => {
                        let (secs, n) = match a.split_once(':') {
                            Some((s, n)) => (s, Some(n)),
                            None => (a, None),
                        };
                        let secs = secs.parse().map_err(|_| {
                            format!("`rate_limit:{a}`: SECS must be a whole number")
                        })?;
                        let times = n
                            .map(|n| {
                                n.parse::<u32>().map_err(|_| {
                                    format!("`rate_limit:{a}`: N must be a whole number")
                                })
                            })
                            .transpose()?;
                        (secs, times)
                    }
                };
                ScriptedMode::RateLimit { secs, times }
            }
            "http_500" => ScriptedMode::Http500 { times: times()? },
            "malformed_json" => ScriptedMode::MalformedJson { times: times()? },
            "out_of_range" => ScriptedMode::OutOfRange { times: times()? },
            "missing_item" => ScriptedMode::MissingItem { times: times()? },
            "truncated" => ScriptedMode::Truncated { times: times()? },
            "refusal" => ScriptedMode::Refusal,
            "hang" => ScriptedMode::Hang,
            "context" => ScriptedMode::Context(
                u32::try_from(num("a context size in words")?).map_err(|e| e.to_string())?,
            ),
            "fatal" => ScriptedMode::Fatal,
            "when" => parse_when(arg.unwrap_or(""))?,
            "cycle" => {
                let list = arg.unwrap_or("");
                let modes = list
                    .split(',')
                    .filter(|m| !m.trim().is_empty())
                    .map(|m| match m.trim().parse::<ScriptedMode>()? {
                        ScriptedMode::Cycle(_) => {
                            Err(format!("`cycle:{list}`: a cycle cannot hold another cycle"))
                        }
                        mode => Ok(mode),
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                if modes.is_empty() {
                    return Err(
                        "`cycle` needs modes, e.g. `cycle:rate_limit:0,http_500,echo`".into(),
                    );
                }
                ScriptedMode::Cycle(modes)
            }
            other => {
                return Err(format!(
                    "unknown scripted mode `{other}`; modes: {SCRIPTED_MODES}"
                ));
            }
        })
    }
}

/// `NEEDLE=MODE;…;*=MODE` (see [`ScriptedMode::When`]).
fn parse_when(list: &str) -> Result<ScriptedMode, String> {
    let mut rules = Vec::new();
    let mut otherwise = None;
    for rule in list.split(';').filter(|r| !r.trim().is_empty()) {
        let Some((needle, mode)) = rule.split_once('=') else {
            return Err(format!(
                "`when:{list}`: rule `{rule}` needs the form NEEDLE=MODE (or *=MODE)"
            ));
        };
        let mode: ScriptedMode = mode.trim().parse()?;
        if matches!(mode, ScriptedMode::When { .. }) {
            return Err(format!("`when:{list}`: a rule cannot hold another `when`"));
        }
        match needle {
            "*" if otherwise.is_some() => {
                return Err(format!("`when:{list}`: more than one `*` rule"));
            }
            "*" => otherwise = Some(mode),
            "" => return Err(format!("`when:{list}`: a rule has an empty needle")),
            n => rules.push((n.to_string(), mode)),
        }
    }
    if rules.is_empty() {
        return Err("`when` needs rules, e.g. `when:Daniel=fatal;*=flaky:1`".into());
    }
    Ok(ScriptedMode::When {
        rules,
        otherwise: Box::new(otherwise.unwrap_or(ScriptedMode::Echo)),
    })
}

impl fmt::Display for ScriptedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |f: &mut fmt::Formatter<'_>, name: &str, t: &Option<u32>| match t {
            Some(n) => write!(f, "{name}:{n}"),
            None => f.write_str(name),
        };
        match self {
            ScriptedMode::Echo => f.write_str("echo"),
            ScriptedMode::Fixed(t) => write!(f, "fixed:{t}"),
            ScriptedMode::Slow(d) => write!(f, "slow:{}", d.as_millis()),
            ScriptedMode::Flaky(n) => write!(f, "flaky:{n}"),
            ScriptedMode::RateLimit {
                secs,
                times: Some(n),
            } => write!(f, "rate_limit:{secs}:{n}"),
            ScriptedMode::RateLimit { secs, times: None } => write!(f, "rate_limit:{secs}"),
            ScriptedMode::Http500 { times } => opt(f, "http_500", times),
            ScriptedMode::MalformedJson { times } => opt(f, "malformed_json", times),
            ScriptedMode::OutOfRange { times } => opt(f, "out_of_range", times),
            ScriptedMode::MissingItem { times } => opt(f, "missing_item", times),
            ScriptedMode::Truncated { times } => opt(f, "truncated", times),
            ScriptedMode::Refusal => f.write_str("refusal"),
            ScriptedMode::Hang => f.write_str("hang"),
            ScriptedMode::Context(n) => write!(f, "context:{n}"),
            ScriptedMode::Fatal => f.write_str("fatal"),
            ScriptedMode::When { rules, otherwise } => {
                f.write_str("when:")?;
                for (needle, mode) in rules {
                    write!(f, "{needle}={mode};")?;
                }
                write!(f, "*={otherwise}")
            }
            ScriptedMode::Cycle(modes) => {
                f.write_str("cycle:")?;
                for (i, m) in modes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{m}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ModelSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(p("embedded"), ModelSpec::Embedded);
        assert_eq!(p("gguf:/m/x.gguf"), ModelSpec::Gguf("/m/x.gguf".into()));
        assert_eq!(
            p("openai:gpt-4o-mini@https://api.openai.com/v1/"),
            ModelSpec::OpenAi {
                model: "gpt-4o-mini".into(),
                base_url: "https://api.openai.com/v1".into(),
                key_env: None,
            }
        );
        assert_eq!(
            p("openai:org/model@v2@http://127.0.0.1:8000/v1"),
            ModelSpec::OpenAi {
                model: "org/model@v2".into(),
                base_url: "http://127.0.0.1:8000/v1".into(),
                key_env: None,
            }
        );
        assert_eq!(
            p("openai:m@https://h/v1#key=JUDGE_KEY"),
            ModelSpec::OpenAi {
                model: "m".into(),
                base_url: "https://h/v1".into(),
                key_env: Some("JUDGE_KEY".into()),
            }
        );
        assert_eq!(p("scripted:echo"), ModelSpec::Scripted(ScriptedMode::Echo));
        assert_eq!(
            p("scripted:fixed:hi: there"),
            ModelSpec::Scripted(ScriptedMode::Fixed("hi: there".into()))
        );
        assert_eq!(
            p("scripted:slow:250"),
            ModelSpec::Scripted(ScriptedMode::Slow(Duration::from_millis(250)))
        );
        assert_eq!(
            p("scripted:flaky:2"),
            ModelSpec::Scripted(ScriptedMode::Flaky(2))
        );
        assert_eq!(
            p("scripted:rate_limit"),
            ModelSpec::Scripted(ScriptedMode::RateLimit {
                secs: 1,
                times: None
            })
        );
        assert_eq!(
            p("scripted:rate_limit:89:2"),
            ModelSpec::Scripted(ScriptedMode::RateLimit {
                secs: 89,
                times: Some(2)
            })
        );
        assert_eq!(
            p("scripted:malformed_json:1"),
            ModelSpec::Scripted(ScriptedMode::MalformedJson { times: Some(1) })
        );
        for m in [
            "http_500",
            "out_of_range",
            "missing_item",
            "truncated",
            "refusal",
            "hang",
        ] {
            let spec = p(&format!("scripted:{m}"));
            assert_eq!(spec.to_string(), format!("scripted:{m}"));
        }
    }

    #[test]
    fn display_round_trips_and_redacts() {
        for s in [
            "embedded",
            "gguf:a.gguf",
            "openai:m@http://h:1/v1",
            "openai:m@https://h/v1#key=MY_KEY",
            "scripted:rate_limit:3:2",
            "scripted:slow:10",
            "scripted:context:200",
            "scripted:cycle:rate_limit:0,http_500,malformed_json,slow:5,echo",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        let secret = p("openai:m@https://u:pw@h/v1#key=K");
        assert_eq!(secret.to_string(), "openai:m@https://****@h/v1#key=K");
        assert_eq!(
            format!("{secret:?}"),
            "ModelSpec(openai:m@https://****@h/v1#key=K)"
        );
        assert_eq!(
            redact_spec("openai:m@https://tok@h/v1"),
            "openai:m@https://****@h/v1"
        );
        // Even a spec that does not parse is masked in its error and in `redact_spec`.
        let bad = "openai:@https://u:pw@h/v1";
        assert!(!redact_spec(bad).contains("pw"));
        let e = bad.parse::<ModelSpec>().unwrap_err().to_string();
        assert!(!e.contains("pw") && e.contains("****"), "{e}");
    }

    #[test]
    fn errors_say_what_is_expected() {
        let e = "llama".parse::<ModelSpec>().unwrap_err().to_string();
        assert!(e.contains("expected `embedded`"), "{e}");
        let e = "openai:gpt".parse::<ModelSpec>().unwrap_err().to_string();
        assert!(e.contains("MODEL@BASE_URL"), "{e}");
        let e = "openai:m@https://h/v1#key=sk-123"
            .parse::<ModelSpec>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("never the key itself") && !e.contains("sk-123"),
            "{e}"
        );
        let e = "scripted:nope"
            .parse::<ModelSpec>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown scripted mode") && e.contains("flaky:N"),
            "{e}"
        );
        for bad in [
            "scripted:cycle",
            "scripted:cycle:",
            "scripted:cycle:echo,cycle:echo",
        ] {
            let e = bad.parse::<ModelSpec>().unwrap_err().to_string();
            assert!(e.contains("cycle"), "{bad}: {e}");
        }
        let e = "scripted:cycle:echo,nope"
            .parse::<ModelSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scripted mode `nope`"), "{e}");
        let e = "scripted:slow:abc"
            .parse::<ModelSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole number"), "{e}");
    }
}
