//! HTML pages (askama templates, escaped by default) and the JSON endpoints of the same views.
//!
//! Every page is complete without JavaScript; none is served. Responses carry a strict
//! Content-Security-Policy (only this origin's stylesheet; no script, no frames, forms post
//! only here), so even a value that escaped escaping could not run.

use std::borrow::Borrow;
use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::view::{self, BuilderView, DisagreementsView, EntryView, HomeView, SearchView};
use crate::api::AppState;
use crate::error::AppError;

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const CSS: &str = include_str!("explorer.css");

/// Query parameters, decoded (`application/x-www-form-urlencoded`), first value wins.
fn params(raw: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

fn limit_param(p: &HashMap<String, String>) -> Result<u64, AppError> {
    match p.get("limit") {
        None => Ok(view::DEFAULT_LIMIT),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=view::MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                AppError::bad(
                    "bad_limit",
                    format!("limit={s:?}: want 1..={}", view::MAX_LIMIT),
                )
            }),
    }
}

fn index_cursor(p: &HashMap<String, String>) -> Result<Option<u64>, AppError> {
    p.get("cursor")
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                AppError::bad(
                    "bad_cursor",
                    format!("{s:?} is not a cursor from this view"),
                )
            })
        })
        .transpose()
}

fn page_param(p: &HashMap<String, String>) -> Result<u64, AppError> {
    match p.get("page") {
        None => Ok(1),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| AppError::bad("bad_page", format!("page={s:?}: want 1, 2, …"))),
    }
}

fn index_param(s: &str) -> Result<u64, AppError> {
    s.parse()
        .map_err(|_| AppError::bad("bad_index", format!("{s:?} is not a leaf index")))
}

fn builder_param(s: &str) -> Result<&str, AppError> {
    if s.is_empty() || s.len() > 256 {
        return Err(AppError::bad(
            "bad_builder",
            "a builder name is 1 to 256 bytes",
        ));
    }
    Ok(s)
}

/// What every page shows around its content.
struct Chrome {
    origin: String,
    query: String,
    json_url: String,
}

impl Chrome {
    fn new(st: &AppState, query: &str, json_url: String) -> Self {
        Self {
            origin: st.log.signer().name().to_owned(),
            query: query.to_owned(),
            json_url,
        }
    }
}

/// Formatting helpers the templates call (`{{ utc(t) }}` is `self.utc(&t)`).
trait Fmt {
    fn utc<T: Borrow<i64>>(&self, t: T) -> String {
        utc_text(*t.borrow())
    }
    fn utc_u<T: Borrow<u64>>(&self, t: T) -> String {
        utc_text(i64::try_from(*t.borrow()).unwrap_or(i64::MAX))
    }
    fn age<T: Borrow<Option<i64>>>(&self, s: T) -> String {
        match *s.borrow() {
            None => "?".into(),
            Some(s) if s < 120 => format!("{s} s"),
            Some(s) if s < 7200 => format!("{} min", s / 60),
            Some(s) if s < 172_800 => format!("{} h", s / 3600),
            Some(s) => format!("{} days", s / 86_400),
        }
    }
    fn pct<T: Borrow<Option<f64>>>(&self, v: T) -> String {
        match *v.borrow() {
            Some(v) => format!("{:.1} %", v * 100.0),
            None => "—".into(),
        }
    }
    fn yesno<T: Borrow<Option<bool>>>(&self, v: T) -> &'static str {
        match *v.borrow() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not stated",
        }
    }
    fn opt<T: Borrow<Option<String>>>(&self, v: T) -> String {
        v.borrow().clone().unwrap_or_else(|| "—".into())
    }
    /// A URL path segment.
    fn seg<T: AsRef<str>>(&self, s: T) -> String {
        path_segment(s.as_ref())
    }
    /// A query-string value.
    fn qenc<T: AsRef<str>>(&self, s: T) -> String {
        url::form_urlencoded::byte_serialize(s.as_ref().as_bytes()).collect()
    }
    fn kind_text<T: AsRef<str>>(&self, k: T) -> &'static str {
        match k.as_ref() {
            "storePath" => "a store path",
            "derivation" => "a derivation (its outputs)",
            "realisation" => "a realisation id",
            _ => "a store-path hash part",
        }
    }
}

/// A URL path segment: unreserved characters kept, everything else percent-encoded.
fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn utc_text(t: i64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_else(|| t.to_string())
}

/// One bar of the ingest chart (SVG user units).
struct Bar {
    x: u64,
    y: u64,
    w: u64,
    h: u64,
    title: String,
}

struct Chart {
    width: u64,
    height: u64,
    max: u64,
    bars: Vec<Bar>,
}

fn chart(v: &HomeView) -> Chart {
    let (width, height) = (600u64, 100u64);
    let n = v.ingest.len().max(1) as u64;
    let slot = width / n;
    let max = v.ingest.iter().map(|m| m.entries).max().unwrap_or(0);
    let bars = v
        .ingest
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let h = if max == 0 || m.entries == 0 {
                0
            } else {
                (m.entries.saturating_mul(height) / max).max(1)
            };
            let minute = time::OffsetDateTime::from_unix_timestamp(m.start)
                .map(|d| format!("{:02}:{:02}", d.hour(), d.minute()))
                .unwrap_or_default();
            Bar {
                x: i as u64 * slot + 1,
                y: height - h,
                w: slot.saturating_sub(2).max(1),
                h,
                title: format!("{minute} UTC: {} entries", m.entries),
            }
        })
        .collect();
    Chart {
        width,
        height,
        max,
        bars,
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    chrome: Chrome,
    v: &'a HomeView,
    chart: Chart,
}
impl Fmt for HomePage<'_> {}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    chrome: Chrome,
    v: Option<&'a SearchView>,
}
impl Fmt for SearchPage<'_> {}

#[derive(Template)]
#[template(path = "builder.html")]
struct BuilderPage<'a> {
    chrome: Chrome,
    v: &'a BuilderView,
}
impl Fmt for BuilderPage<'_> {}

#[derive(Template)]
#[template(path = "disagreements.html")]
struct DisagreementsPage<'a> {
    chrome: Chrome,
    v: &'a DisagreementsView,
}
impl Fmt for DisagreementsPage<'_> {}

#[derive(Template)]
#[template(path = "entry.html")]
struct EntryPage<'a> {
    chrome: Chrome,
    v: &'a EntryView,
}
impl Fmt for EntryPage<'_> {}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: String,
    code: String,
    message: String,
}
impl Fmt for ErrorPage {}

fn html_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    html_headers(&mut resp);
    resp
}

fn render<T: Template>(t: &T) -> Result<Response, AppError> {
    let body = t
        .render()
        .map_err(|e| AppError::Internal(format!("template: {e}")))?;
    Ok(html(StatusCode::OK, body))
}

/// An error as a page: the same status, code and client-safe message as the JSON form.
fn error_page(chrome: Chrome, e: &AppError) -> Response {
    let (status, code, message) = e.parts();
    if status.is_server_error() {
        tracing::error!(error = %e, code, "explorer page failed");
    }
    let page = ErrorPage {
        chrome,
        status: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        code: code.to_owned(),
        message,
    };
    let body = page.render().unwrap_or_else(|_| "error".to_owned());
    let mut resp = html(status, body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn page_result(chrome: impl FnOnce() -> Chrome, r: Result<Response, AppError>) -> Response {
    r.unwrap_or_else(|e| error_page(chrome(), &e))
}

fn json_url(path: &str, raw: Option<&str>) -> String {
    match raw {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

/// `GET /explorer.css`.
pub async fn get_css() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        CSS,
    )
        .into_response()
}

/// `GET /v1/explorer/home[?page=N]`.
pub async fn get_home_json(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<HomeView>, AppError> {
    let p = params(raw.as_deref());
    Ok(Json(view::home(&st, page_param(&p)?).await?))
}

/// `GET /[?page=N]`: the log, its checkpoint and witnesses, ingest, builders.
pub async fn get_home(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let jurl = json_url("/v1/explorer/home", raw.as_deref());
    let r = async {
        let p = params(raw.as_deref());
        let v = view::home(&st, page_param(&p)?).await?;
        render(&HomePage {
            chrome: Chrome::new(&st, "", jurl.clone()),
            chart: chart(&v),
            v: &v,
        })
    }
    .await;
    page_result(|| Chrome::new(&st, "", jurl.clone()), r)
}

async fn search_view(st: &AppState, raw: Option<&str>) -> Result<Option<SearchView>, AppError> {
    let p = params(raw);
    let limit = limit_param(&p)?;
    let cursor = index_cursor(&p)?;
    match p.get("q").map(|q| q.trim()).filter(|q| !q.is_empty()) {
        None => Ok(None),
        Some(q) => Ok(Some(view::search(st, q, cursor, limit).await?)),
    }
}

/// `GET /v1/explorer/search?q=…[&cursor=I][&limit=N]`.
pub async fn get_search_json(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SearchView>, AppError> {
    match search_view(&st, raw.as_deref()).await? {
        Some(v) => Ok(Json(v)),
        None => Err(AppError::bad(
            "bad_query",
            "need ?q=<store path, hash part, .drv path or realisation id>",
        )),
    }
}

/// `GET /search?q=…`: every builder's claim for an output, side by side, with proofs.
pub async fn get_search(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let jurl = json_url("/v1/explorer/search", raw.as_deref());
    let q = params(raw.as_deref()).remove("q").unwrap_or_default();
    let r = async {
        let v = search_view(&st, raw.as_deref()).await?;
        render(&SearchPage {
            chrome: Chrome::new(&st, &q, jurl.clone()),
            v: v.as_ref(),
        })
    }
    .await;
    page_result(|| Chrome::new(&st, &q, jurl.clone()), r)
}

async fn builder_view(
    st: &AppState,
    name: &str,
    raw: Option<&str>,
) -> Result<BuilderView, AppError> {
    let p = params(raw);
    view::builder(
        st,
        builder_param(name)?,
        index_cursor(&p)?,
        limit_param(&p)?,
    )
    .await
}

/// `GET /v1/explorer/builders/{name}[?cursor=I][&limit=N]`.
pub async fn get_builder_json(
    State(st): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<BuilderView>, AppError> {
    Ok(Json(builder_view(&st, &name, raw.as_deref()).await?))
}

/// `GET /builder/{name}`: a builder's counts, reproducibility, attestation and recent entries.
pub async fn get_builder(
    State(st): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let jurl = json_url(
        &format!("/v1/explorer/builders/{}", path_segment(&name)),
        raw.as_deref(),
    );
    let r = async {
        let v = builder_view(&st, &name, raw.as_deref()).await?;
        render(&BuilderPage {
            chrome: Chrome::new(&st, "", jurl.clone()),
            v: &v,
        })
    }
    .await;
    page_result(|| Chrome::new(&st, "", jurl.clone()), r)
}

async fn disagreements_view(
    st: &AppState,
    raw: Option<&str>,
) -> Result<DisagreementsView, AppError> {
    let p = params(raw);
    let cursor = p
        .get("cursor")
        .map(|c| view::parse_conflict_cursor(c))
        .transpose()?;
    view::disagreements(st, cursor, limit_param(&p)?).await
}

/// `GET /v1/explorer/disagreements[?cursor=C][&limit=N]`.
pub async fn get_disagreements_json(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DisagreementsView>, AppError> {
    Ok(Json(disagreements_view(&st, raw.as_deref()).await?))
}

/// `GET /disagreements`: outputs with conflicting claims, newest first.
pub async fn get_disagreements(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let jurl = json_url("/v1/explorer/disagreements", raw.as_deref());
    let r = async {
        let v = disagreements_view(&st, raw.as_deref()).await?;
        render(&DisagreementsPage {
            chrome: Chrome::new(&st, "", jurl.clone()),
            v: &v,
        })
    }
    .await;
    page_result(|| Chrome::new(&st, "", jurl.clone()), r)
}

/// `GET /v1/explorer/entries/{index}`.
pub async fn get_entry_json(
    State(st): State<AppState>,
    Path(index): Path<String>,
) -> Result<Json<EntryView>, AppError> {
    Ok(Json(view::entry(&st, index_param(&index)?).await?))
}

/// `GET /entry/{index}`: one entry's claims, proof and a link to the raw envelope.
pub async fn get_entry(State(st): State<AppState>, Path(index): Path<String>) -> Response {
    let jurl = format!("/v1/explorer/entries/{}", path_segment(&index));
    let r = async {
        let v = view::entry(&st, index_param(&index)?).await?;
        render(&EntryPage {
            chrome: Chrome::new(&st, "", jurl.clone()),
            v: &v,
        })
    }
    .await;
    page_result(|| Chrome::new(&st, "", jurl.clone()), r)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T;
    impl Fmt for T {}

    #[test]
    fn helpers_encode_and_format() {
        assert_eq!(T.seg("a b/<x>"), "a%20b%2F%3Cx%3E");
        assert_eq!(T.qenc("/nix/store/x y&z"), "%2Fnix%2Fstore%2Fx+y%26z");
        assert_eq!(T.utc(0i64), "1970-01-01 00:00:00 UTC");
        assert_eq!(T.pct(Some(2.0 / 3.0)), "66.7 %");
        assert_eq!(T.pct(None), "—");
        assert_eq!(T.age(Some(150)), "2 min");
    }

    #[test]
    fn params_decode_and_bound() {
        let p = params(Some("q=%2Fnix%2Fstore%2Fabc+d&limit=7&limit=9"));
        assert_eq!(p["q"], "/nix/store/abc d");
        assert_eq!(limit_param(&p).unwrap(), 7);
        for bad in ["limit=0", "limit=101", "limit=x"] {
            let e = limit_param(&params(Some(bad))).unwrap_err();
            assert_eq!(e.parts().1, "bad_limit");
        }
        assert_eq!(
            index_cursor(&params(Some("cursor=-1")))
                .unwrap_err()
                .parts()
                .1,
            "bad_cursor"
        );
        assert_eq!(
            page_param(&params(Some("page=0"))).unwrap_err().parts().1,
            "bad_page"
        );
    }
}
