//! Health checks as the registry holds them: what an instance's owner
//! defined (kind, target, interval, thresholds) and each check's status.
//!
//! Running checks is the health driver's (`crate::health`): it proposes a
//! [`Change::CheckStatus`](super::change::Change::CheckStatus) when a check's
//! status moves. The core only stores the definitions, validates them, and
//! derives an instance's status: the worst of its checks (passing < warning
//! < critical), the heartbeat TTL (the implicit `ttl` check) included.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::labels::CheckName;
use super::model::{Health, ModelError, Text};

/// Bounds on check definitions: they keep one registration from making
/// Maxine do unbounded work or hold unbounded text.
pub mod limits {
    use std::time::Duration;
    /// Checks one instance may define (the implicit `ttl` check aside).
    pub const MAX_CHECKS: usize = 8;
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
    pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
    /// A check's timeout when none is given: this, or its interval if shorter.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const MAX_THRESHOLD: u32 = 100;
    pub const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(1);
    pub const MAX_DEREGISTER_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const MAX_URL_LEN: usize = 2048;
    pub const MAX_METHOD_LEN: usize = 16;
    pub const MAX_HEADERS: usize = 16;
    pub const MAX_HEADER_NAME: usize = 128;
    pub const MAX_HEADER_VALUE: usize = 1024;
    pub const MAX_GRPC_SERVICE: usize = 256;
    pub const MAX_ARGS: usize = 32;
    pub const MAX_ARG_LEN: usize = 1024;
    /// The most of a check's output kept (and shown), in bytes.
    pub const MAX_OUTPUT: usize = 4096;
}

/// The name of the implicit heartbeat check of every instance; no defined
/// check may take it.
pub const TTL_CHECK: &str = "ttl";

/// The name of the HTTP check a Maxine-compatible `healthCheckPath`
/// becomes.
pub const COMPAT_CHECK: &str = "health-check-path";

/// One check as defined, validated by [`CheckSpec::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub name: CheckName,
    pub kind: CheckKind,
    /// Time between the start of one run and the start of the next.
    pub interval: Duration,
    /// A run that takes longer is critical (and is abandoned).
    pub timeout: Duration,
    /// Passing results in a row that bring a non-passing check back.
    pub success_before_passing: u32,
    /// Non-passing results in a row that move a passing check (to the
    /// status of the last of them).
    pub failures_before_critical: u32,
    /// A check critical for this long deregisters its instance.
    pub deregister_critical_after: Option<Duration>,
}

/// What a check runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// An HTTP(S) request: 2xx passing, 429 warning, anything else critical.
    Http {
        /// `http://` or `https://` URL.
        url: Text,
        /// Upper-case method, `GET` by default.
        method: Text,
        headers: Vec<(Text, Text)>,
    },
    /// A TCP connection to `ip:port`: passing once connected.
    Tcp { target: std::net::SocketAddr },
    /// `grpc.health.v1.Health/Check` at `ip:port` (plain HTTP/2) for
    /// `service` ("" asks about the server as a whole).
    Grpc {
        target: std::net::SocketAddr,
        service: Text,
    },
    /// A program run without a shell: exit 0 passing, 1 warning, anything
    /// else (or the timeout) critical. Only with `--enable-script-checks`.
    Script { args: Vec<Text> },
}

impl CheckKind {
    /// The name of the kind, as the API shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Grpc { .. } => "grpc",
            CheckKind::Script { .. } => "script",
        }
    }
}

impl CheckSpec {
    /// A check of `kind` with the default interval, timeout and thresholds.
    pub fn new(name: CheckName, kind: CheckKind) -> Self {
        Self {
            name,
            kind,
            interval: limits::DEFAULT_INTERVAL,
            timeout: limits::DEFAULT_TIMEOUT,
            success_before_passing: 1,
            failures_before_critical: 1,
            deregister_critical_after: None,
        }
    }

    /// Checks every bound; the error names the check and the field.
    pub fn validate(&self) -> Result<(), ModelError> {
        use limits::*;
        let name = self.name.as_str();
        let bad = |what: String| Err(ModelError::Invalid(format!("check {name:?}: {what}")));
        if name == TTL_CHECK {
            return Err(ModelError::Invalid(format!(
                "check name {TTL_CHECK:?} is the instance's heartbeat check: set the instance's ttl instead"
            )));
        }
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            return bad(format!(
                "interval must be between {}s and {}s",
                MIN_INTERVAL.as_secs(),
                MAX_INTERVAL.as_secs()
            ));
        }
        if self.timeout < MIN_TIMEOUT || self.timeout > self.interval {
            return bad(format!(
                "timeout must be between {}ms and the interval",
                MIN_TIMEOUT.as_millis()
            ));
        }
        for (field, n) in [
            ("success_before_passing", self.success_before_passing),
            ("failures_before_critical", self.failures_before_critical),
        ] {
            if n == 0 || n > MAX_THRESHOLD {
                return bad(format!("{field} must be between 1 and {MAX_THRESHOLD}"));
            }
        }
        if let Some(d) = self.deregister_critical_after
            && (d < MIN_DEREGISTER_AFTER || d > MAX_DEREGISTER_AFTER)
        {
            return bad(format!(
                "deregister_critical_after must be between {}s and {}s",
                MIN_DEREGISTER_AFTER.as_secs(),
                MAX_DEREGISTER_AFTER.as_secs()
            ));
        }
        match &self.kind {
            CheckKind::Http {
                url,
                method,
                headers,
            } => {
                if let Err(why) = check_url(url) {
                    return bad(why);
                }
                if method.is_empty()
                    || method.len() > MAX_METHOD_LEN
                    || !method.bytes().all(|b| b.is_ascii_uppercase())
                {
                    return bad(format!(
                        "method {method:?} must be 1 to {MAX_METHOD_LEN} upper-case letters"
                    ));
                }
                if headers.len() > MAX_HEADERS {
                    return bad(format!("at most {MAX_HEADERS} headers"));
                }
                for (k, v) in headers {
                    let token =
                        |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                    if k.is_empty() || k.len() > MAX_HEADER_NAME || !k.bytes().all(token) {
                        return bad(format!(
                            "header name {k:?} must be 1 to {MAX_HEADER_NAME} token characters"
                        ));
                    }
                    if v.len() > MAX_HEADER_VALUE
                        || v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
                    {
                        return bad(format!(
                            "header {k:?} must be at most {MAX_HEADER_VALUE} bytes without control characters"
                        ));
                    }
                }
            }
            CheckKind::Tcp { target } | CheckKind::Grpc { target, .. } => {
                if target.port() == 0 {
                    return bad("the target's port must be between 1 and 65535".into());
                }
                if let CheckKind::Grpc { service, .. } = &self.kind
                    && (service.len() > MAX_GRPC_SERVICE
                        || !service.bytes().all(|b| b.is_ascii_graphic()))
                {
                    return bad(format!(
                        "grpc_service must be at most {MAX_GRPC_SERVICE} printable characters"
                    ));
                }
            }
            CheckKind::Script { args } => {
                if args.is_empty() || args.len() > MAX_ARGS {
                    return bad(format!("args must hold 1 to {MAX_ARGS} arguments"));
                }
                if args[0].is_empty() {
                    return bad("args[0], the program, must not be empty".into());
                }
                if args
                    .iter()
                    .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
                {
                    return bad(format!(
                        "each argument must be at most {MAX_ARG_LEN} bytes without NUL"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host,
/// within [`limits::MAX_URL_LEN`], without spaces or control characters.
/// (The API parses it fully as well; this is what a stored record must hold.)
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > limits::MAX_URL_LEN {
        return Err(format!(
            "the URL is longer than {} bytes",
            limits::MAX_URL_LEN
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("URL {url:?} must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "URL {url:?} must name a host (and no user information)"
        ));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "URL {url:?} must not contain spaces or control characters"
        ));
    }
    Ok(())
}

/// Checks a list of definitions: each valid, names unique, at most
/// [`limits::MAX_CHECKS`].
pub fn validate_all(checks: &[CheckSpec]) -> Result<(), ModelError> {
    if checks.len() > limits::MAX_CHECKS {
        return Err(ModelError::Invalid(format!(
            "at most {} checks per instance",
            limits::MAX_CHECKS
        )));
    }
    for (n, c) in checks.iter().enumerate() {
        c.validate()?;
        if checks[..n].iter().any(|o| o.name == c.name) {
            return Err(ModelError::Invalid(format!(
                "check name {:?} is given twice",
                c.name.as_str()
            )));
        }
    }
    Ok(())
}

/// The outcome of one run of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub status: Health,
    /// What the run said (the HTTP status line, the error, the script's
    /// output), at most [`limits::MAX_OUTPUT`] bytes.
    pub output: Text,
    /// Milliseconds since the Unix epoch when the run finished.
    pub at_ms: u64,
}

impl CheckResult {
    /// A result with `output` cut to [`limits::MAX_OUTPUT`] bytes (at a
    /// character boundary).
    pub fn new(status: Health, output: &str, at_ms: u64) -> Self {
        let mut end = output.len().min(limits::MAX_OUTPUT);
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            status,
            output: Text::from(&output[..end]),
            at_ms,
        }
    }
}

/// One defined check and its latest run. Values of its instance that keep
/// the definition share it; the latest result is not part of the registered
/// value (a run that changes no status is no change), so it is kept here,
/// written by the health driver without the registry's lock.
#[derive(Debug)]
pub struct Check {
    pub spec: CheckSpec,
    last: Mutex<Option<CheckResult>>,
}

impl Check {
    pub fn new(spec: CheckSpec) -> Arc<Self> {
        Arc::new(Self {
            spec,
            last: Mutex::new(None),
        })
    }

    /// The latest run's result, if it ran.
    pub fn last(&self) -> Option<CheckResult> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a run's result.
    pub fn record(&self, result: CheckResult) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }
}

/// A check of one instance value, with its status in that value.
#[derive(Clone, Debug)]
pub struct CheckEntry {
    pub check: Arc<Check>,
    pub status: Health,
}

/// An instance's defined checks, in name order, behind one thin pointer (8
/// bytes; no heap when there are none, as for most instances).
#[derive(Clone, Default)]
pub struct Checks(Option<Box<Box<[CheckEntry]>>>);

impl std::ops::Deref for Checks {
    type Target = [CheckEntry];
    fn deref(&self) -> &[CheckEntry] {
        self.0.as_deref().map_or(&[], |s| s)
    }
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|e| (e.check.spec.name.as_str(), e.status)))
            .finish()
    }
}

impl Checks {
    fn from_entries(mut entries: Vec<CheckEntry>) -> Self {
        entries.sort_by(|a, b| a.check.spec.name.cmp(&b.check.spec.name));
        Self((!entries.is_empty()).then(|| Box::new(entries.into_boxed_slice())))
    }

    /// The checks of `specs`; a definition equal to one in `current` keeps
    /// that check (its latest result) and its status, so that registering
    /// the same checks again (SDKs re-register as their heartbeat) resets
    /// nothing. A new check starts passing: a registration is the instance
    /// saying it is ready, and after a restart answers stay as they were
    /// until a check says otherwise.
    pub fn build(specs: Vec<CheckSpec>, current: &Checks) -> Self {
        Self::from_entries(
            specs
                .into_iter()
                .map(|spec| match current.get(spec.name.as_str()) {
                    Some(e) if e.check.spec == spec => e.clone(),
                    _ => CheckEntry {
                        check: Check::new(spec),
                        status: Health::Passing,
                    },
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&CheckEntry> {
        self.iter().find(|e| e.check.spec.name.as_str() == name)
    }

    /// The worst status of the checks (passing when there are none).
    pub fn worst(&self) -> Health {
        self.iter()
            .map(|e| e.status)
            .max()
            .unwrap_or(Health::Passing)
    }

    /// These checks with `name` at `status`; `None` when there is no such
    /// check or it already has that status.
    pub fn with_status(&self, name: &str, status: Health) -> Option<Checks> {
        let at = self
            .iter()
            .position(|e| e.check.spec.name.as_str() == name)?;
        if self[at].status == status {
            return None;
        }
        let mut entries = self.to_vec();
        entries[at].status = status;
        Some(Self::from_entries(entries))
    }

    /// The definitions, in name order.
    pub fn specs(&self) -> Vec<CheckSpec> {
        self.iter().map(|e| e.check.spec.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(name: &str) -> CheckSpec {
        CheckSpec::new(
            CheckName::new(name).unwrap(),
            CheckKind::Http {
                url: "http://127.0.0.1:8080/health".into(),
                method: "GET".into(),
                headers: Vec::new(),
            },
        )
    }

    #[test]
    fn definitions_out_of_bounds_are_rejected_with_the_field_named() {
        assert!(http("web").validate().is_ok());
        type Tweak = Box<dyn Fn(&mut CheckSpec)>;
        let cases: Vec<(Tweak, &str)> = vec![
            (
                Box::new(|c| c.interval = Duration::from_millis(10)),
                "interval",
            ),
            (Box::new(|c| c.timeout = Duration::from_secs(60)), "timeout"),
            (
                Box::new(|c| c.failures_before_critical = 0),
                "failures_before_critical",
            ),
            (
                Box::new(|c| c.success_before_passing = 1000),
                "success_before_passing",
            ),
            (
                Box::new(|c| c.deregister_critical_after = Some(Duration::from_millis(1))),
                "deregister_critical_after",
            ),
            (
                Box::new(|c| c.name = CheckName::new("ttl").unwrap()),
                "heartbeat",
            ),
            (
                Box::new(|c| {
                    c.kind = CheckKind::Http {
                        url: "ftp://x/".into(),
                        method: "GET".into(),
                        headers: vec![],
                    }
                }),
                "http://",
            ),
            (
                Box::new(|c| {
                    c.kind = CheckKind::Http {
                        url: "http://x/".into(),
                        method: "get me".into(),
                        headers: vec![],
                    }
                }),
                "method",
            ),
            (
                Box::new(|c| {
                    c.kind = CheckKind::Http {
                        url: "http://x/".into(),
                        method: "GET".into(),
                        headers: vec![("X-A".into(), "a\nb".into())],
                    }
                }),
                "header",
            ),
            (
                Box::new(|c| c.kind = CheckKind::Script { args: vec![] }),
                "args",
            ),
            (
                Box::new(|c| {
                    c.kind = CheckKind::Tcp {
                        target: "127.0.0.1:0".parse().unwrap(),
                    }
                }),
                "port",
            ),
        ];
        for (tweak, word) in cases {
            let mut c = http("web");
            tweak(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(word), "{err} lacks {word}");
        }
        let many: Vec<_> = (0..9).map(|n| http(&format!("c{n}"))).collect();
        assert!(
            validate_all(&many)
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
        assert!(
            validate_all(&[http("a"), http("a")])
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn an_instance_status_is_the_worst_of_its_checks_and_equal_definitions_keep_theirs() {
        let checks = Checks::build(vec![http("a"), http("b")], &Checks::default());
        assert_eq!(checks.worst(), Health::Passing);
        let warn = checks.with_status("b", Health::Warning).unwrap();
        assert_eq!(warn.worst(), Health::Warning);
        let crit = warn.with_status("a", Health::Critical).unwrap();
        assert_eq!(crit.worst(), Health::Critical);
        assert!(crit.with_status("a", Health::Critical).is_none());
        assert!(crit.with_status("zz", Health::Critical).is_none());
        // The same definitions again: statuses kept; a changed one restarts.
        let mut changed = http("b");
        changed.interval = Duration::from_secs(20);
        let again = Checks::build(vec![http("a"), changed], &crit);
        assert_eq!(again.get("a").unwrap().status, Health::Critical);
        assert_eq!(again.get("b").unwrap().status, Health::Passing);
        assert!(Arc::ptr_eq(
            &again.get("a").unwrap().check,
            &crit.get("a").unwrap().check
        ));
    }

    #[test]
    fn outputs_are_cut_at_a_character_boundary() {
        let long = "é".repeat(limits::MAX_OUTPUT);
        let r = CheckResult::new(Health::Critical, &long, 1);
        assert!(r.output.len() <= limits::MAX_OUTPUT && r.output.len() >= limits::MAX_OUTPUT - 1);
    }
}
