//! The operator's allow-list of policy endpoints for `POST /v1/rollouts`
//! (`--policy-url-allow PREFIX`): the service never calls a URL a client names unless an
//! operator allowed it.
//!
//! A prefix matches on parsed URLs, never on text: same scheme, host and port, and a path at
//! or below the prefix's path at a `/` boundary (`http://10.0.0.5:8000/v1` allows
//! `http://10.0.0.5:8000/v1` and `…/v1/x`, not `…/v10`, `http://10.0.0.5:80001` or
//! `http://10.0.0.5:8000@elsewhere/`).

use reqwest::Url;

#[derive(Debug, Clone, Default)]
pub struct PolicyAllow {
    prefixes: Vec<Url>,
}

impl PolicyAllow {
    /// Parses the operator's prefixes; each must be an http(s) URL with a host and no
    /// credentials, query or fragment.
    pub fn parse(prefixes: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for p in prefixes {
            let u = Url::parse(p.trim()).map_err(|e| {
                format!(
                    "`--policy-url-allow {p}` is not a URL ({e}); e.g. http://127.0.0.1:8000/v1"
                )
            })?;
            let plain = u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none();
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() || !plain {
                return Err(format!(
                    "`--policy-url-allow {p}` must be an http(s) URL with a host and no credentials, query or fragment, e.g. http://127.0.0.1:8000/v1"
                ));
            }
            out.push(u);
        }
        Ok(Self { prefixes: out })
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether `url` lies under one of the prefixes.
    pub fn allows(&self, url: &str) -> bool {
        let Ok(u) = Url::parse(url) else {
            return false;
        };
        if u.query().is_some() || u.fragment().is_some() {
            return false;
        }
        self.prefixes.iter().any(|p| {
            let base = p.path().trim_end_matches('/');
            let path = u.path();
            p.scheme() == u.scheme()
                && p.host_str() == u.host_str()
                && p.port_or_known_default() == u.port_or_known_default()
                && (path.trim_end_matches('/') == base || path.starts_with(&format!("{base}/")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_parsed_urls_not_text() {
        let a = PolicyAllow::parse(&["http://10.0.0.5:8000/v1".into(), "https://gw.lab/".into()])
            .unwrap();
        for ok in [
            "http://10.0.0.5:8000/v1",
            "http://10.0.0.5:8000/v1/",
            "http://10.0.0.5:8000/v1/sessions/7",
            "https://gw.lab/anything/v1",
            "https://gw.lab:443/v1",
            "https://user:pw@gw.lab/v1",
        ] {
            assert!(a.allows(ok), "{ok}");
        }
        for bad in [
            "http://10.0.0.5:8000/v10",
            "http://10.0.0.5:80001/v1",
            "http://10.0.0.5:8000@169.254.169.254/v1",
            "http://10.0.0.5:8001/v1",
            "https://10.0.0.5:8000/v1",
            "http://gw.lab/v1",
            "https://gw.lab.evil.com/v1",
            "http://10.0.0.5:8000/v1?x=1",
            "http://10.0.0.5:8000/v1/../../admin",
            "not a url",
        ] {
            assert!(!a.allows(bad), "{bad}");
        }
    }

    #[test]
    fn bad_prefixes_are_refused_at_start() {
        for bad in [
            "10.0.0.5:8000",
            "ftp://h/v1",
            "http://u:p@h/v1",
            "http://h/v1?k=1",
        ] {
            assert!(PolicyAllow::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(PolicyAllow::parse(&[]).unwrap().is_empty());
    }
}
